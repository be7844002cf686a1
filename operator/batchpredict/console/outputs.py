"""`results` and `failures`: a run's rows, read from its output location with the user's own
storage credentials through the one reader of the output layout (io/results.py)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from batchpredict.console import render
from batchpredict.console.kube import ConsoleError, Kube
from batchpredict.io.results import OutputsNotFoundError, RunOutputs, field_text
from batchpredict.io.storage import StorageDriverError

FAILURE_COLUMNS = ("id", "code", "message", "attempts", "round", "shard", "retryable")


def parse_where(pairs: Sequence[str]) -> dict[str, str]:
    where = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConsoleError(f"--where {pair!r}: expected field=value")
        where[key] = value
    return where


async def run_outputs(kube: Kube, name: str) -> tuple[str, RunOutputs]:
    """(the run's name, a reader of its output location)."""
    bp = await kube.get_run(name)
    uri = str(((bp.get("spec") or {}).get("output") or {}).get("uri") or "")
    try:
        outputs = RunOutputs(uri)
        await asyncio.to_thread(outputs.plan)
    except (StorageDriverError, OutputsNotFoundError, OSError) as error:
        raise ConsoleError(f"{bp['metadata']['name']}: cannot read its output: {error}") from None
    return str(bp["metadata"]["name"]), outputs


def _read(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        return list(rows)
    except (OSError, ValueError) as error:
        raise ConsoleError(f"cannot read the output: {error}") from None


def print_rows(
    console: Console, rows: list[dict[str, Any]], output: str, columns: Sequence[str] | None
) -> None:
    if output == "jsonl":
        for row in rows:
            console.out(json.dumps(row, separators=(",", ":")), highlight=False)
    elif output == "csv":
        names = list(columns or (rows[0].keys() if rows else []))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(names)
        for row in rows:
            writer.writerow([field_text(row[n]) if n in row else "" for n in names])
        console.out(buffer.getvalue(), end="", highlight=False)
    else:
        render.show(console, render.rows_table(rows, columns))


async def results_command(
    kube: Kube,
    console: Console,
    name: str,
    *,
    limit: int | None,
    output: str,
    where: Sequence[str],
    download: Path | None,
) -> int:
    run, outputs = await run_outputs(kube, name)
    if download is not None:
        files = await asyncio.to_thread(download_outputs, outputs, download)
        console.out(f"downloaded {len(files)} files of {run} to {download}", highlight=False)
        return 0
    filters = parse_where(where)
    rows = await asyncio.to_thread(_read, outputs.predictions(limit, filters))
    print_rows(console, rows, output, None)
    return 0


async def failures_command(
    kube: Kube,
    console: Console,
    name: str,
    *,
    codes: Sequence[str],
    limit: int | None,
    output: str,
) -> int:
    _, outputs = await run_outputs(kube, name)
    rows = await asyncio.to_thread(_read, outputs.failures(codes, limit))
    columns = None if output in {"jsonl"} else FAILURE_COLUMNS
    print_rows(console, rows, output, columns)
    return 0


def download_outputs(outputs: RunOutputs, target: Path) -> list[Path]:
    """Copy the run's answer files (predictions, failures, manifest, evaluation) into
    `target`, keeping their paths under the output location."""
    layout = outputs.layout
    wanted = [*outputs.prediction_files(), layout.plan]
    summaries = (layout.summary, layout.final_failures, outputs.evaluation_path)
    wanted += [path for path in summaries if layout.exists(path)]
    copied = []
    for path in wanted:
        relative = path[len(layout.root) :].lstrip("/")
        local = target / relative
        os.makedirs(local.parent, exist_ok=True)
        layout.fs.get(path, str(local))
        copied.append(local)
    return copied
