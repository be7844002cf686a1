"""What the plan and shard roles share: the plan file, the dataset, the model and its mapping."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

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
from batchpredict.worker.config import CannotStartError, WorkerEnv, make_client


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
        return await asyncio.to_thread(open_dataset, env.spec.input)
    except DatasetNotFoundError as error:
        raise CannotStartError(exit_codes.REASON_DATASET_NOT_FOUND, str(error)) from None
    except StorageDriverError as error:
        raise CannotStartError(exit_codes.REASON_INVALID_SPEC, str(error)) from None


def open_layout(env: WorkerEnv) -> OutputLayout:
    """The run's output location; CannotStartError when no driver can reach it."""
    try:
        return OutputLayout(env.spec.output.uri)
    except StorageDriverError as error:
        raise CannotStartError(exit_codes.REASON_INVALID_SPEC, str(error)) from None


async def setup_model(env: WorkerEnv, dataset: Dataset) -> ModelSetup:
    """Connect to Triton, check the model is ready, map tensors; CannotStartError if not."""
    spec = env.spec
    client = make_client(env)
    try:
        await client.wait_live(env.triton_wait)
        info = await client.model_info(spec.model.name, spec.model.version)
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
