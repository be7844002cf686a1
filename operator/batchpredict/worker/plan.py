"""The plan role: check dataset and model, count the items, write the shard plan."""

from __future__ import annotations

import asyncio
import errno
from datetime import UTC, datetime
from typing import Any

from batchpredict.planning import DEFAULT_CHUNK_ITEMS, plan_shards
from batchpredict.worker import exit_codes
from batchpredict.worker.config import CannotStartError, WorkerEnv
from batchpredict.worker.setup import (
    check_run,
    load_dataset,
    open_layout,
    save_dicom_index,
    setup_model,
)


async def run_plan(env: WorkerEnv) -> dict[str, Any]:
    """Returns the compact result for the termination message: {total, shards, ...}."""
    spec = env.spec
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
    total = await asyncio.to_thread(dataset.count)
    groups = await asyncio.to_thread(dataset.group_sizes)
    plan = plan_shards(total, spec, env.chunk_items or DEFAULT_CHUNK_ITEMS, groups)
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


def cannot_write_there(error: OSError) -> bool:
    """The location itself is wrong (a missing bucket, no permission, a read-only volume, a
    file in the way), as opposed to a store that did not answer this time."""
    wrong = (FileNotFoundError, PermissionError, NotADirectoryError, FileExistsError)
    return isinstance(error, wrong) or error.errno == errno.EROFS
