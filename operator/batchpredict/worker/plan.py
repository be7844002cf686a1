"""The plan role: check dataset and model, count the items, write the shard plan."""

from __future__ import annotations

import asyncio
import errno
from datetime import UTC, datetime
from typing import Any

from batchpredict.api.v1alpha1.data import InputFormat
from batchpredict.io.readers import Dataset
from batchpredict.planning import DEFAULT_CHUNK_ITEMS, ShardPlan, plan_byte_shards, plan_shards
from batchpredict.worker import exit_codes
from batchpredict.worker.config import CannotStartError, WorkerEnv
from batchpredict.worker.setup import (
    check_run,
    load_dataset,
    open_layout,
    save_dicom_index,
    setup_model,
)

# Text datasets this big are planned by byte ranges when spec.input.byteRanges is left out:
# below it, counting the rows costs well under a second and keeps row-number ids.
BYTE_RANGES_FROM = 256 * 1024 * 1024


async def run_plan(env: WorkerEnv) -> dict[str, Any]:
    """Returns the compact result for the termination message: {total, shards, ...}."""
    layout = open_layout(env)
    if await asyncio.to_thread(layout.exists, layout.plan):
        check_run(await asyncio.to_thread(layout.read_json, layout.plan), env.run_uid, layout)
    elif foreign := await asyncio.to_thread(layout.foreign_entry):
        # A run never overwrites what it did not write: another run's or anyone's files.
        raise CannotStartError(
            exit_codes.REASON_INVALID_SPEC,
            f"spec.output.uri: {layout.uri} is not empty and holds no run's plan.json "
            f"(found {foreign}); use an empty or new output location",
        )
    dataset = await load_dataset(env)
    setup = await setup_model(env, dataset)
    await setup.client.close()
    chunk_items = env.chunk_items or DEFAULT_CHUNK_ITEMS
    plan = await asyncio.to_thread(make_plan, dataset, env, chunk_items)
    result: dict[str, Any] = {
        **plan.to_wire(),
        "batchSize": setup.batch_size,
        "concurrency": setup.concurrency,
        "modelVersion": setup.info.version,
    }
    document = {
        **result,
        **plan.starts_wire(),
        "runUid": env.run_uid,
        "name": env.name,
        "namespace": env.namespace,
        "createdAt": datetime.now(UTC).isoformat(),
        "inputs": [b.__dict__ | {"shape": list(b.shape)} for b in setup.inputs],
        "outputs": [{"tensor": o.tensor, "field": o.field} for o in setup.outputs],
    }
    if plan.by_bytes:
        document["splits"] = plan.splits_to_wire()
    try:  # the run's first write to its output location
        await asyncio.to_thread(layout.write_json, layout.plan, document)
        if dataset.dicom is not None:  # the shards number the items from this same index
            await asyncio.to_thread(save_dicom_index, layout, dataset.dicom)
    except OSError as error:
        if not cannot_write_there(error):
            raise  # a timeout or a refused connection: the pod is retried
        raise CannotStartError(
            exit_codes.REASON_OUTPUT_NOT_WRITABLE,
            f"spec.output.uri: cannot write {layout.url(layout.plan)}: {error}",
        ) from None
    return result


def make_plan(dataset: Dataset, env: WorkerEnv, chunk_items: int) -> ShardPlan:
    """By byte ranges from the listing (text formats, see planning.py), else by rows counted
    (Parquet from its metadata, files from the listing, small text files from line ends)."""
    spec = env.spec
    wanted = spec.input.byte_ranges  # true only where the spec's validation allows it
    text = spec.input.format in {InputFormat.JSONL, InputFormat.CSV}
    limit = spec.input.select is not None and spec.input.select.limit is not None
    if text and not limit and wanted is not False:
        sizes = dataset.file_sizes()
        if wanted or sum(size for _, size in sizes) >= BYTE_RANGES_FROM:
            guess = dataset.bytes_per_item() if spec.items_per_shard else None
            try:
                return plan_byte_shards(sizes, spec, chunk_items, guess)
            except ValueError as error:
                raise CannotStartError(exit_codes.REASON_INVALID_SPEC, str(error)) from None
    return plan_shards(dataset.count(), spec, chunk_items, dataset.group_sizes())


def cannot_write_there(error: OSError) -> bool:
    """The location itself is wrong (a missing bucket, no permission, a read-only volume, a
    file in the way), as opposed to a store that did not answer this time."""
    wrong = (FileNotFoundError, PermissionError, NotADirectoryError, FileExistsError)
    return isinstance(error, wrong) or error.errno == errno.EROFS
