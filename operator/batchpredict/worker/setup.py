"""What the plan and shard roles share: the plan file, the dataset, the model and its mapping."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from batchpredict.api.v1alpha1.data import InputFormat
from batchpredict.api.v1alpha1.dicom import DicomInput
from batchpredict.io.dicom import DicomIndex, DicomSpecError
from batchpredict.io.layout import OutputLayout
from batchpredict.io.readers import Dataset, DatasetNotFoundError, open_dataset
from batchpredict.io.storage import StorageDriverError
from batchpredict.planning import ShardPlan
from batchpredict.triton.client import ModelInfo, ModelUnavailableError, TritonClient
from batchpredict.triton.tensors import (
    InputBinding,
    MappingError,
    OutputBinding,
    auto_batch_size,
    auto_concurrency,
    bind_inputs,
    bind_outputs,
)
from batchpredict.worker import exit_codes
from batchpredict.worker.config import (
    CannotStartError,
    TritonUnavailableError,
    WorkerEnv,
    make_client,
)

log = logging.getLogger(__name__)
# A `dicom` run's header index, next to plan.json (written by the plan step after it).
DICOM_INDEX = "dicom-index.json"
# Waiting for Triton: the first pause, and the longest (jittered, doubling in between).
WAIT_FIRST, WAIT_LONGEST = 1.0, 15.0
# Told while the pod waits: (reason, message), then (None, None) once Triton answers.
OnWait = Callable[[str | None, str | None], None]


@dataclass
class ModelSetup:
    client: TritonClient
    info: ModelInfo
    inputs: list[InputBinding]
    outputs: list[OutputBinding]
    batch_size: int
    concurrency: int


async def load_dataset(env: WorkerEnv) -> Dataset:
    try:
        dataset = await asyncio.to_thread(open_dataset, env.spec.input)
        if env.spec.input.format == InputFormat.DICOM:
            await asyncio.to_thread(load_dicom_index, open_layout(env), dataset)
    except DatasetNotFoundError as error:
        raise CannotStartError(exit_codes.REASON_DATASET_NOT_FOUND, str(error)) from None
    except (StorageDriverError, DicomSpecError) as error:
        raise CannotStartError(exit_codes.REASON_INVALID_SPEC, str(error)) from None
    return dataset


def load_dicom_index(layout: OutputLayout, dataset: Dataset) -> None:
    """The header index the plan step stored (the same items, numbered the same way, in
    every shard), else one read from the headers now (the plan step itself)."""
    path = layout.path(DICOM_INDEX)
    if layout.exists(path):
        settings = dataset.spec.dicom or DicomInput()
        dataset.dicom = DicomIndex.from_wire(dataset.fs, layout.read_json(path), settings)
    else:
        dataset.dicom_index()


def save_dicom_index(layout: OutputLayout, index: DicomIndex) -> None:
    layout.write_json(layout.path(DICOM_INDEX), index.to_wire())


def open_layout(env: WorkerEnv) -> OutputLayout:
    """The run's output location; CannotStartError when no driver can reach it."""
    try:
        return OutputLayout(env.spec.output.uri)
    except StorageDriverError as error:
        raise CannotStartError(exit_codes.REASON_INVALID_SPEC, str(error)) from None


async def wait_for_model(
    client: TritonClient, env: WorkerEnv, on_wait: OnWait | None = None
) -> ModelInfo:
    """The model's metadata once Triton is live and the model ready. A server that is down,
    restarting or still loading the model is waited for, with jittered backoff, up to
    `env.triton_wait` seconds (TritonUnavailableError then); only a model the server does
    not have fails at once (ModelNotFound)."""
    spec = env.spec
    deadline = time.monotonic() + env.triton_wait
    pause = WAIT_FIRST
    while True:
        try:
            await client.wait_live(min(5.0, max(deadline - time.monotonic(), 0.1)))
            info = await client.model_info(spec.model.name, spec.model.version)
        except ModelUnavailableError as error:
            if error.reason == exit_codes.REASON_MODEL_NOT_FOUND:
                raise
            message = f"waiting for {client.describe()}: {error}"
            if on_wait is not None:  # said even when giving up now: the last report keeps it
                on_wait(exit_codes.REASON_TRITON_UNAVAILABLE, message)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TritonUnavailableError(
                    f"{error} (waited {env.triton_wait:g}s: spec.stallTimeoutSeconds)"
                ) from None
            log.warning("%s; trying again in %.0fs", message, min(pause, left))
            await asyncio.sleep(min(pause * (0.5 + random.random()), left))  # noqa: S311
            pause = min(pause * 2, WAIT_LONGEST)
            continue
        if on_wait is not None:
            on_wait(None, None)
        return info


async def setup_model(
    env: WorkerEnv, dataset: Dataset, on_wait: OnWait | None = None
) -> ModelSetup:
    """Connect to Triton, wait for the model, map tensors; CannotStartError if it cannot."""
    spec = env.spec
    client = make_client(env)
    try:
        info = await wait_for_model(client, env, on_wait)
        preprocess = spec.input.preprocess
        fields = (
            [] if preprocess and preprocess.function else await asyncio.to_thread(dataset.fields)
        )
        # The id field names items; it feeds a model input only when mapped, or when alone.
        fields = [f for f in fields if f != spec.input.id_field] or fields
        inputs = bind_inputs(spec.model, info, fields)
        outputs = bind_outputs(spec.model, info)
    except ModelUnavailableError as error:
        await client.close()
        raise CannotStartError(error.reason, str(error)) from None
    except MappingError as error:
        await client.close()
        raise CannotStartError(exit_codes.REASON_INVALID_SPEC, str(error)) from None
    except BaseException:
        await client.close()
        raise
    return ModelSetup(
        client,
        info,
        inputs,
        outputs,
        batch_size=auto_batch_size(info, inputs, spec.batching.batch_size),
        concurrency=auto_concurrency(info, spec.batching.concurrency),
    )


def read_plan(layout: OutputLayout, run_uid: str) -> ShardPlan:
    """The plan the plan step wrote for this run."""
    if not layout.exists(layout.plan):
        raise CannotStartError(
            exit_codes.REASON_PLAN_NOT_FOUND,
            f"no shard plan at {layout.url(layout.plan)}: run `batchpredict-worker plan` first",
        )
    data = layout.read_json(layout.plan)
    check_run(data, run_uid, layout)
    return ShardPlan.from_wire(data)


def check_run(plan: dict[str, object], run_uid: str, layout: OutputLayout) -> None:
    """Refuse to mix two runs' outputs in one place."""
    other = str(plan.get("runUid") or "")
    if other and run_uid and other != run_uid:
        raise CannotStartError(
            exit_codes.REASON_INVALID_SPEC,
            f"spec.output.uri: {layout.uri} already holds the outputs of another run ({other}); "
            "use an empty output location",
        )
