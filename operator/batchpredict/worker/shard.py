"""The shard role: one completion index of one round, resumable chunk by chunk."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import resource
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from batchpredict.io.layout import OutputLayout
from batchpredict.io.readers import Dataset, ItemBatch
from batchpredict.io.splits import SPLIT_STRIDE
from batchpredict.planning import ShardPlan
from batchpredict.triton.tensors import MAX_AUTO_CONCURRENCY
from batchpredict.worker import exit_codes
from batchpredict.worker.config import CannotStartError, WorkerEnv
from batchpredict.worker.pipeline import OnCommit, Settings, ShardPipeline
from batchpredict.worker.preprocess import Preprocessor
from batchpredict.worker.report import ApiSink, FileSink, ProgressReporter, ReportSink
from batchpredict.worker.rounds import chunk_count, mark_manual_redo, round_outcome, shard_work
from batchpredict.worker.setup import (
    ModelSetup,
    load_dataset,
    open_layout,
    read_plan,
    setup_model,
)
from batchpredict.worker.splitsizes import resolve_sizes

log = logging.getLogger(__name__)


def peak_memory_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, it starts at exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@contextlib.contextmanager
def lean_gc() -> Iterator[None]:
    """The pipeline makes many short-lived objects and few cycles: leave what start-up loaded
    out of the collector's scans, and scan less often (5% less CPU per item on Python 3.11)."""
    thresholds = gc.get_threshold()
    gc.collect()  # start-up's garbage goes now, not frozen with the rest
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


class CpuClock:
    """CPU seconds since creation: the whole process, and this (the event loop's) thread."""

    def __init__(self) -> None:
        self._process, self._thread = time.process_time(), time.thread_time()

    def read(self, stages: dict[str, float] | None = None) -> dict[str, float]:
        """With `stages`, the CPU seconds other threads measured of their own work."""
        seconds = {
            "process": time.process_time() - self._process,
            "eventLoop": time.thread_time() - self._thread,
            **(stages or {}),
        }
        return {name: round(value, 3) for name, value in seconds.items()}


def _sink(env: WorkerEnv, layout: OutputLayout, shard: int) -> ReportSink | None:
    if env.report_mode == "api":
        from batchpredict.api.v1alpha1.report import report_name  # noqa: PLC0415

        return ApiSink(env.namespace, report_name(env.name, env.run_uid, env.round, shard))
    if env.report_mode in {"off", "none"}:
        return None
    if env.report_mode == "file":
        path = env.report_file or f"{layout.shard_dir(env.round, shard)}/report.json"
        return FileSink(layout, path)
    return None


async def build_pipeline(  # noqa: PLR0917 (what a shard's pipeline is made of)
    env: WorkerEnv,
    setup: ModelSetup,
    dataset: Dataset,
    layout: OutputLayout,
    on_commit: OnCommit,
    chunk_items: int,
) -> ShardPipeline:
    """The shard's pipeline: settings from the spec and the model, its preprocessor (and
    pool), the fields its reader needs to convert. `batchpredict predict` builds the same
    one, so that one item takes exactly a run's path."""
    spec = env.spec
    settings = Settings(
        model=spec.model.name,
        version=spec.model.version,
        batch_size=setup.batch_size,
        concurrency=setup.concurrency,
        attempts=spec.retry.request_attempts,
        backoff=spec.retry.request_backoff,
        chunk_items=chunk_items,
        output_format=spec.output.format.value,
        round=env.round,
        shard=env.shard or 0,  # set: run_shard checked
        adaptive=spec.batching.concurrency is None,
        max_concurrency=MAX_AUTO_CONCURRENCY,
    )
    preprocessor = await asyncio.to_thread(
        Preprocessor,
        setup.inputs,
        spec.input.preprocess,
        spec.carried_fields(),
        setup.batch_size,
        setup.info.max_batch_size > 0,
    )
    if not (spec.input.preprocess and spec.input.preprocess.function):
        # What the tensors and the output use: JSONL converts no other field.
        dataset.keep_only({b.field for b in setup.inputs} | set(spec.carried_fields()))
    return ShardPipeline(
        client=setup.client,
        preprocessor=preprocessor,
        outputs=setup.outputs,
        settings=settings,
        layout=layout,
        on_commit=on_commit,
    )


def reader(dataset: Dataset, plan: ShardPlan, shard: int) -> Callable[..., Iterator[ItemBatch]]:
    """What reads the shard's items by position: its byte range alone in a byte-range plan."""
    if not plan.by_bytes:
        return dataset.iter_items
    return functools.partial(dataset.iter_items, split=(plan.splits[shard], shard * SPLIT_STRIDE))


async def _shard_plan(
    env: WorkerEnv, layout: OutputLayout, shard: int
) -> tuple[ShardPlan, Dataset | None]:
    """The run's plan knowing this shard's size; by byte ranges, the shard's range is counted
    first (its items are then numbered 0..n-1 of it), with the dataset this opened."""
    plan = await asyncio.to_thread(read_plan, layout, env.run_uid)
    if shard >= plan.shards:
        raise CannotStartError(
            exit_codes.REASON_INVALID_SPEC,
            f"shard {shard} is outside the plan's {plan.shards} shards",
        )
    if not plan.by_bytes:
        return plan, None
    dataset = await load_dataset(env)
    plan = await asyncio.to_thread(resolve_sizes, layout, plan, [shard], lambda: dataset)
    return plan, dataset


async def run_shard(env: WorkerEnv) -> dict[str, Any]:
    shard = env.shard
    if shard is None:
        raise CannotStartError(exit_codes.REASON_INVALID_SPEC, "JOB_COMPLETION_INDEX is not set")
    layout = open_layout(env)
    plan, dataset = await _shard_plan(env, layout, shard)
    if env.manual_redo is not None and env.round > 0:
        await asyncio.to_thread(mark_manual_redo, layout, env.round, env.manual_redo)
    work = await asyncio.to_thread(shard_work, layout, plan, shard, env.round)
    size = plan.chunk_items
    done = await asyncio.to_thread(round_outcome, layout, env.round, shard, work, size)
    reporter = ProgressReporter(
        _sink(env, layout, shard),
        name=env.name,
        namespace=env.namespace,
        run_uid=env.run_uid,
        round_=env.round,
        shard=shard,
        interval=env.report_interval,
    )
    reporter.items_total = len(work)
    for c, failures in done.failures.items():
        reporter.resume(len(work[c * size : (c + 1) * size]) - len(failures), failures)
    todo = [c for c in range(chunk_count(work, size)) if c not in done.committed]
    started = time.monotonic()
    cpu = CpuClock()
    setup = None
    pipeline = None
    reporter.start()
    try:
        if todo:
            dataset = dataset or await load_dataset(env)
            setup = await setup_model(env, dataset, on_wait=reporter.waiting)
            pipeline = await build_pipeline(env, setup, dataset, layout, reporter.commit, size)
            preprocessor = pipeline.preprocessor
            log.info(
                "shard %d round %d: %d items, %d chunks to do, batch %d, concurrency %d",
                shard,
                env.round,
                len(work),
                len(todo),
                setup.batch_size,
                setup.concurrency,
            )
            try:
                with lean_gc():
                    started = time.monotonic()  # throughput of the pipeline, not of start-up
                    cpu = CpuClock()
                    await pipeline.run(work, todo, reader(dataset, plan, shard))
            finally:
                await asyncio.to_thread(preprocessor.close)
        elapsed = time.monotonic() - started
        manifest = {
            "round": env.round,
            "shard": shard,
            "items": len(work),
            "succeeded": reporter.succeeded,
            "failed": reporter.failed,
            "retryableFailed": reporter.retryable,
            "failureCounts": dict(reporter.counts),
            "retryableCounts": dict(reporter.retryable_counts),
            "chunks": chunk_count(work, size),
            "chunkItems": size,
            "batchSize": setup.batch_size if setup else None,
            "concurrency": pipeline.tuner.limit if pipeline else None,
            "seconds": round(elapsed, 3),
            "itemsPerSecond": round(reporter.done_here / elapsed, 1) if elapsed > 0 else 0.0,
            # Where the pipeline's CPU went: the event loop is the one serial stage; `reading`
            # (read, preprocess, encode requests) and `writing` (commit chunks) are threads;
            # `preprocessing` (when items go to the pool: files, images, a function) is the
            # pool's threads or processes; the rest of the process's is other threads (gRPC's
            # own, report writes).
            "cpuSeconds": cpu.read(pipeline.cpu_seconds if pipeline else None),
            "peakMemoryMiB": peak_memory_mib(),
            "finishedAt": datetime.now(UTC).isoformat(),
        }
        await asyncio.to_thread(
            layout.write_json, layout.shard_manifest(env.round, shard), manifest
        )
    except BaseException as error:
        message = str(error) or type(error).__name__
        await asyncio.shield(reporter.close(finished=False, message=message))
        raise
    finally:
        if setup is not None:
            await setup.client.close()
    await reporter.close(finished=True)
    return manifest
