"""The finalize role: the final outcome of every item, a summary manifest, an optional
combined predictions file. Reads only committed files; safe to run again."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pyarrow.parquet as pq

from batchpredict.io.layout import OutputLayout
from batchpredict.worker.config import WorkerEnv
from batchpredict.worker.rounds import chunk_count, walk_rounds
from batchpredict.worker.setup import read_plan


def _finalize(env: WorkerEnv) -> dict[str, Any]:
    spec = env.spec
    layout = OutputLayout(spec.output.uri)
    plan = read_plan(layout, env.run_uid)
    size, last = plan.chunk_items, env.round
    succeeded = missing = 0
    counts: Counter[str] = Counter()
    retryable = 0
    prediction_files: list[str] = []
    incomplete: list[dict[str, int]] = []
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
                        # A retryable failure is final only in the last round that ran.
                        if failure["retryable"] and failure["round"] < last:
                            continue
                        counts[failure["code"]] += 1
                        retryable += bool(failure["retryable"])
                        failures_out.write(
                            json.dumps(failure, separators=(",", ":")).encode() + b"\n"
                        )
            unfinished = len(outcome.work) - sum(
                len(outcome.work[c * size : (c + 1) * size]) for c in outcome.committed
            )
            if unfinished:
                missing += unfinished
                incomplete.append({"shard": shard, "round": last, "items": unfinished})
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
        "retryableFailed": retryable,
        "missing": missing,
        "failureCounts": dict(counts),
        "incompleteShards": incomplete,
        "predictions": combined or layout.url(layout.path("rounds")),
        "predictionFiles": [layout.url(p) for p in prediction_files],
        "failures": layout.url(layout.final_failures),
        "format": fmt,
        "finishedAt": datetime.now(UTC).isoformat(),
    }
    layout.write_json(layout.summary, summary)
    return {k: summary[k] for k in ("total", "succeeded", "failed", "missing", "predictions")}


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
