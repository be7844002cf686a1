"""`predict -f run.yaml --item FILE | --row JSON | --from-dataset N`: items through the exact
path a run takes. The spec's reader, preprocessing, tensor mapping, Triton client, retries and
postprocessing are the worker's own (worker/setup.py and the shard pipeline of worker/shard.py),
writing one chunk into a temporary output location that io/results.py reads back: the answer
is the row the run's output file would hold, and a failure is the record a run would write."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchpredict.api.v1alpha1.data import InputFormat
from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.console.kube import ConsoleError
from batchpredict.io.layout import OutputLayout
from batchpredict.io.results import RunOutputs
from batchpredict.worker.config import CannotStartError, WorkerEnv
from batchpredict.worker.setup import load_dataset, setup_model
from batchpredict.worker.shard import build_pipeline

# How long predict waits for Triton to answer: a user at a terminal, not a pod.
DEFAULT_WAIT = 5.0


@dataclass
class Prediction:
    predictions: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


def _with_input(spec: BatchPredictionSpec, tmp: Path, item: Path | None, row: str | None) -> Any:
    """The spec reading `item` or `row` instead of its dataset (same format and preprocessing),
    and writing into `tmp`."""
    body = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    body["output"] = {**body["output"], "uri": str(tmp / "out"), "combine": False}
    if item is not None:
        if spec.input.format != InputFormat.FILES:
            raise ConsoleError(
                f"--item reads a file, but spec.input.format is {spec.input.format.value}: "
                "use --row or --from-dataset"
            )
        if not item.is_file():
            raise ConsoleError(f"--item {item}: no such file")
        folder = tmp / "item"
        folder.mkdir()
        shutil.copyfile(item, folder / item.name)
        body["input"] = {**body["input"], "uri": str(folder)}
        body["input"].pop("select", None)
    elif row is not None:
        try:
            value = json.loads(row)
        except ValueError as error:
            raise ConsoleError(f"--row: not JSON: {error}") from None
        if not isinstance(value, dict):
            raise ConsoleError("--row: expected a JSON object of the item's fields")
        (tmp / "row.jsonl").write_text(json.dumps(value) + "\n")
        body["input"] = {**body["input"], "uri": str(tmp / "row.jsonl"), "format": "jsonl"}
        body["input"].pop("select", None)
    return BatchPredictionSpec.model_validate(body)


def _env(spec: BatchPredictionSpec, tmp: Path, triton_url: str | None, wait: float) -> WorkerEnv:
    return WorkerEnv(
        spec=spec,
        name="predict",
        namespace="",
        run_uid="",
        round=0,
        manual_redo=None,
        shard=0,
        triton_url=triton_url,
        report_mode="off",
        report_file=None,
        report_interval=5.0,
        termination_log=tmp / "termination-log",
        tls_dir=tmp / "tls",  # TLS files of spec.triton.tls are not on the user's machine
        headers_dir=tmp / "headers",
        triton_wait=wait,
        chunk_items=None,
    )


def _timed(
    infer: Callable[..., Awaitable[Any]], timings: dict[str, float]
) -> Callable[..., Awaitable[Any]]:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await infer(*args, **kwargs)
        finally:
            timings["infer"] = timings.get("infer", 0.0) + time.perf_counter() - started

    return timed


async def predict(
    spec: BatchPredictionSpec,
    *,
    item: Path | None = None,
    row: str | None = None,
    first: int | None = None,
    triton_url: str | None = None,
    wait: float = DEFAULT_WAIT,
) -> Prediction:
    """Items through the run's path: `item` (a file), `row` (JSON fields) or the `first` N
    items of the spec's dataset. ConsoleError when it cannot start (the worker's message)."""
    with tempfile.TemporaryDirectory(prefix="batchpredict-predict-") as name:
        tmp = Path(name)
        spec = _with_input(spec, tmp, item, row)
        env = _env(spec, tmp, triton_url, wait)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        try:
            dataset = await load_dataset(env)
            count = 1 if first is None else min(first, await asyncio.to_thread(dataset.count))
            setup = await setup_model(env, dataset)
        except CannotStartError as error:
            # The worker's message, less its pod-side hint (predict waits --wait seconds).
            message = str(error).removesuffix(f" (waited {wait:g}s: spec.stallTimeoutSeconds)")
            raise ConsoleError(f"{error.reason}: {message}") from None
        timings["connect"] = time.perf_counter() - started
        layout = OutputLayout(spec.output.uri)
        try:
            if count == 0:
                raise ConsoleError(f"the dataset {spec.input.uri} has no items")
            setattr(setup.client, "infer", _timed(setup.client.infer, timings))  # noqa: B010
            pipeline = await build_pipeline(
                env, setup, dataset, layout, lambda *_: None, max(count, 1)
            )
            started = time.perf_counter()
            try:
                await pipeline.run(range(count), [0], dataset.iter_items)
            finally:
                await asyncio.to_thread(pipeline.preprocessor.close)
            timings["pipeline"] = time.perf_counter() - started
            cpu = pipeline.cpu_seconds
            timings["read+preprocess (cpu)"] = cpu.get("reading", 0.0) + cpu.get(
                "preprocessing", 0.0
            )
            timings["postprocess+write (cpu)"] = cpu.get("writing", 0.0)
        finally:
            await setup.client.close()
        outputs = RunOutputs(spec.output.uri)
        found = await asyncio.to_thread(
            lambda: (list(outputs.predictions()), list(outputs.failures()))
        )
        return Prediction(found[0], found[1], {k: round(v, 4) for k, v in timings.items()})
