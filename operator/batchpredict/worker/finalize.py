"""The finalize role: the final outcome of every item, a summary manifest, an optional
combined predictions file. Reads only committed files; safe to run again."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from numpy.typing import NDArray

from batchpredict.evaluation.evaluate import evaluate_or_explain
from batchpredict.io.layout import OutputLayout
from batchpredict.io.readers import Dataset, ItemBatch, open_dataset
from batchpredict.io.splits import SPLIT_STRIDE
from batchpredict.planning import ShardPlan
from batchpredict.worker.config import WorkerEnv
from batchpredict.worker.rounds import ManualRedo, chunk_count, manual_redo, walk_rounds
from batchpredict.worker.setup import open_layout, read_plan
from batchpredict.worker.splitsizes import resolve_sizes

NOT_PROCESSED = "NOT_PROCESSED"
# The termination message (4 KB) carries the counts and the first final failures, their
# messages shortened; the operator's status shows them, failures.jsonl has all.
SAMPLE_ITEMS, SAMPLE_MESSAGE_CHARS, RESULT_BYTES = 20, 160, 3800


def _finalize(env: WorkerEnv) -> dict[str, Any]:
    spec = env.spec
    layout = open_layout(env)
    plan = read_plan(layout, env.run_uid)
    # A byte-range plan: every range's count (recorded by its shard, else counted here).
    plan = resolve_sizes(layout, plan, range(plan.shards), lambda: open_dataset(spec.input))
    size, last = plan.chunk_items, env.round
    succeeded = missing = 0
    counts: Counter[str] = Counter()
    retryable_counts: Counter[str] = Counter()
    sample: list[dict[str, Any]] = []
    prediction_files: list[str] = []
    incomplete: list[dict[str, int]] = []
    unfinished: dict[int, NDArray[np.int64]] = {}
    manual = {r: manual_redo(layout, r) for r in range(1, last + 1)}
    with layout.open_atomic(layout.final_failures) as failures_out:
        for shard in range(plan.shards):
            for outcome in walk_rounds(layout, plan, shard, last):
                for c in range(chunk_count(outcome.work, size)):
                    items = len(outcome.work[c * size : (c + 1) * size])
                    if c not in outcome.committed:
                        continue
                    prediction_files.append(outcome.committed[c])
                    failures = outcome.failures.get(c, [])
                    succeeded += items - len(failures)
                    for failure in failures:
                        if redone_later(failure, last, manual):
                            continue
                        _count(failure, counts, retryable_counts, sample)
                        failures_out.write(
                            json.dumps(failure, separators=(",", ":")).encode() + b"\n"
                        )
            never = [
                np.asarray(outcome.work[c * size : (c + 1) * size], dtype=np.int64)
                for c in range(chunk_count(outcome.work, size))
                if c not in outcome.committed
            ]
            if never:
                unfinished[shard] = np.concatenate(never)
                incomplete.append({"shard": shard, "round": last, "items": len(unfinished[shard])})
        if unfinished:
            for failure in _not_processed(env, plan, last, unfinished):
                _count(failure, counts, retryable_counts, sample)
                missing += 1
                failures_out.write(json.dumps(failure, separators=(",", ":")).encode() + b"\n")
    failed = sum(counts.values())
    fmt = spec.output.format.value
    combined = _combine(layout, prediction_files, fmt) if spec.output.combine else None
    summary: dict[str, Any] = {
        "name": env.name,
        "runUid": env.run_uid,
        "rounds": last + 1,
        "total": plan.total_items,
        "succeeded": succeeded,
        "failed": failed,
        "retryableFailed": sum(retryable_counts.values()),
        "notProcessed": missing,
        "failureCounts": dict(counts),
        "retryableCounts": dict(retryable_counts),
        "incompleteShards": incomplete,
        "predictions": combined or layout.url(layout.path("rounds")),
        "predictionFiles": [layout.url(p) for p in prediction_files],
        "failures": layout.url(layout.final_failures),
        "format": fmt,
        "finishedAt": datetime.now(UTC).isoformat(),
    }
    layout.write_json(layout.summary, summary)
    evaluation = (
        evaluate_or_explain(layout.uri, spec.evaluation) if spec.evaluation is not None else None
    )
    keys = (
        "total",
        "succeeded",
        "failed",
        "notProcessed",
        "failureCounts",
        "retryableCounts",
        "predictions",
    )
    result = {k: summary[k] for k in keys}
    if evaluation is not None:
        result["evaluation"] = evaluation  # a few hundred bytes: fit_result keeps it whole
    return fit_result(result, sample)


def redone_later(failure: dict[str, Any], last: int, manual: dict[int, ManualRedo | None]) -> bool:
    """A failure of round r is final unless a later round redid it: an automatic round r+1
    redoes the retryable ones, a manual round after r those of the codes it selects."""
    r = int(failure["round"])
    if r >= last:
        return False
    if manual[r + 1] is None and failure["retryable"]:
        return True
    return any(
        m is not None and m.redoes(str(failure["code"]))
        for m in (manual[n] for n in range(r + 1, last + 1))
    )


def _count(
    failure: dict[str, Any],
    counts: Counter[str],
    retryable_counts: Counter[str],
    sample: list[dict[str, Any]],
) -> None:
    """Count one final failure, and keep it as an example while there are few."""
    counts[failure["code"]] += 1
    if failure["retryable"]:
        retryable_counts[failure["code"]] += 1
    if len(sample) < SAMPLE_ITEMS:
        keys = ("id", "shard", "attempts", "code", "retryable")
        item = {k: failure[k] for k in keys if k in failure}
        item["message"] = str(failure.get("message", ""))[:SAMPLE_MESSAGE_CHARS]
        item["id"] = str(item["id"])[:SAMPLE_MESSAGE_CHARS]
        sample.append(item)


def fit_result(result: dict[str, Any], sample: list[dict[str, Any]]) -> dict[str, Any]:
    """The termination message: the counts, and as many sample failures as fit in it."""
    sample = list(sample)
    while True:
        value = {**result, "failedSample": sample}
        if len(json.dumps(value, separators=(",", ":"))) <= RESULT_BYTES or not sample:
            return value
        sample.pop()


def _not_processed(
    env: WorkerEnv, plan: ShardPlan, last: int, unfinished: dict[int, NDArray[np.int64]]
) -> Iterator[dict[str, Any]]:
    """Failure records for items whose shard never committed them (its pod gave up), so that
    every input id still ends up exactly once in predictions or failures."""
    dataset = open_dataset(env.spec.input)
    for batch in _items_at(dataset, plan, unfinished):
        for index, position in enumerate(batch.positions.tolist()):
            shard = plan.shard_of(position)
            yield {
                "id": batch.id_at(index),
                "position": position,
                "shard": shard,
                "round": last,
                "code": NOT_PROCESSED,
                "message": f"shard {shard} did not finish in round {last} (its pod failed, "
                "Triton stayed unreachable, or the run was stopped); the item got no answer",
                "attempts": 0,
                "retryable": True,
            }


def _items_at(
    dataset: Dataset, plan: ShardPlan, positions_by_shard: dict[int, NDArray[np.int64]]
) -> Iterator[ItemBatch]:
    """The items at these positions: one pass over the dataset, or over each byte range."""
    if not plan.by_bytes:
        positions = np.sort(np.concatenate(list(positions_by_shard.values())))
        yield from dataset.iter_items(int(positions[0]), int(positions[-1]) + 1, wanted=positions)
        return
    for shard, positions in sorted(positions_by_shard.items()):
        wanted = np.sort(positions)
        base = shard * SPLIT_STRIDE
        split = (plan.splits[shard], base)
        stop = int(wanted[-1]) + 1
        yield from dataset.iter_items(int(wanted[0]), stop, wanted=wanted, split=split)


def _combine(layout: OutputLayout, files: list[str], fmt: str) -> str:
    """Every prediction in one file, streamed chunk by chunk (memory stays flat)."""
    target = layout.combined(fmt)
    with layout.open_atomic(target) as out:
        if fmt == "jsonl":
            for path in files:
                with layout.fs.open(path, "rb") as handle:
                    out.write(handle.read())
        else:
            tables = (pq.read_table(layout.fs.open(p, "rb")) for p in files)
            writer: pq.ParquetWriter | None = None
            for table in tables:
                if table.num_rows == 0:
                    continue
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema, compression="zstd")
                schema = writer.schema
                writer.write_table(table.select(schema.names).cast(schema))
            if writer is not None:
                writer.close()
    return layout.url(target)


async def run_finalize(env: WorkerEnv) -> dict[str, Any]:
    return await asyncio.to_thread(_finalize, env)
