"""Read verbs on runs: `list`, `get`, and the data behind them (also the dashboard's)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import yaml
from rich.console import Console

from batchpredict.console import render
from batchpredict.console.kube import ConsoleError, Kube
from batchpredict.console.runs import (
    RunDetail,
    RunRow,
    build_rounds,
    filter_runs,
    run_detail,
    run_row,
    shard_count,
)
from batchpredict.io.results import OutputsNotFoundError, RunOutputs
from batchpredict.io.storage import StorageDriverError


async def list_rows(
    kube: Kube,
    *,
    all_namespaces: bool,
    phase: str | None = None,
    model: str | None = None,
    user: str | None = None,
) -> tuple[list[dict[str, Any]], list[RunRow]]:
    """(the objects, their rows) of the runs that pass the filters, newest first."""
    objects = await kube.list_runs(all_namespaces=all_namespaces)
    rows = filter_runs((run_row(o) for o in objects), phase=phase, model=model, user=user)
    kept = {(r.namespace, r.name) for r in rows}
    by_key = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
    return [by_key[k] for k in ((r.namespace, r.name) for r in rows) if k in kept], rows


def _outputs(bp: dict[str, Any]) -> RunOutputs | None:
    uri = ((bp.get("spec") or {}).get("output") or {}).get("uri")
    if not uri:
        return None
    try:
        return RunOutputs(str(uri))
    except StorageDriverError:
        return None


def _read_outputs(outputs: RunOutputs | None) -> tuple[dict[Any, Any], dict[str, Any] | None]:
    """The shards' manifests and the evaluation, when the user can read the output."""
    if outputs is None:
        return {}, None
    with contextlib.suppress(OSError, ValueError, OutputsNotFoundError):
        return outputs.shard_manifests(), outputs.evaluation()
    return {}, None


async def _pods(kube: Kube, bp: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's pods; none when the user may not list pods (the tree then names none)."""
    try:
        return await kube.pods(bp)
    except ConsoleError:
        return []


async def load_detail(kube: Kube, bp: dict[str, Any]) -> RunDetail:
    """A run with its rounds and shards: Jobs, pods and live reports from the API, finished
    shards' manifests and the evaluation from the output (with the user's credentials)."""
    jobs, pods, reports = await asyncio.gather(kube.jobs(bp), _pods(kube, bp), kube.reports(bp))
    manifests, evaluation = await asyncio.to_thread(_read_outputs, _outputs(bp))
    rounds = build_rounds(jobs, pods, reports, manifests, shard_count(bp))
    return run_detail(bp, rounds, evaluation)


def print_objects(console: Console, objects: list[dict[str, Any]], output: str) -> bool:
    """-o json|yaml: the objects as the API holds them; False for other formats."""
    if output == "json":
        value: Any = objects[0] if len(objects) == 1 else {"kind": "List", "items": objects}
        console.print_json(json.dumps(value, default=str))
        return True
    if output == "yaml":
        value = objects[0] if len(objects) == 1 else {"kind": "List", "items": objects}
        console.out(yaml.safe_dump(value, sort_keys=False), end="", highlight=False)
        return True
    return False


async def list_command(
    kube: Kube,
    console: Console,
    *,
    all_namespaces: bool,
    output: str,
    headers: bool,
    phase: str | None,
    model: str | None,
    user: str | None,
) -> int:
    objects, rows = await list_rows(
        kube, all_namespaces=all_namespaces, phase=phase, model=model, user=user
    )
    if print_objects(console, objects, output):
        return 0
    if output == "name":
        console.out(render.run_names(rows), end="")
        return 0
    if not rows:
        where = "any namespace" if all_namespaces else f"namespace {kube.namespace}"
        console.print(f"No batchpredictions found in {where}.")
        return 0
    render.show(
        console,
        render.run_table(rows, wide=output == "wide", headers=headers, namespaces=all_namespaces),
    )
    return 0


async def get_command(kube: Kube, console: Console, name: str, *, output: str) -> int:
    bp = await kube.get_run(name)
    if output in {"json", "yaml"}:
        print_objects(console, [bp], output)
        return 0
    if output == "name":
        console.out(render.run_names([run_row(bp)]), end="")
        return 0
    detail = await load_detail(kube, bp)
    render.show(console, render.detail_view(detail))
    return 0
