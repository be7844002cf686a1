"""`watch NAME` and `status NAME`: follow a run until it ends and exit with its outcome (0
Succeeded, 2 PartiallySucceeded, 1 Failed or Cancelled, 124 on --timeout). On a terminal the
screen is redrawn (rich Live); elsewhere (a pipe, CI logs) one line is printed per change."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.live import Live

from batchpredict.console import render
from batchpredict.console.inspect import load_detail
from batchpredict.console.kube import Kube
from batchpredict.console.runs import EXIT_TIMEOUT, RunRow, run_row

POLL_SECONDS = 1.0


def _change_key(row: RunRow) -> tuple[Any, ...]:
    return (row.phase, row.succeeded, row.failed, row.total, row.round)


def _new_failures(bp: dict[str, Any], seen: set[str]) -> list[dict[str, Any]]:
    """Failed items in status not shown before (status keeps the first few of them)."""
    fresh = []
    for item in (bp.get("status") or {}).get("failedItems") or []:
        key = f"{item.get('id')}/{item.get('code')}"
        if key not in seen:
            seen.add(key)
            fresh.append(item)
    return fresh


async def follow(
    kube: Kube,
    console: Console,
    name: str,
    *,
    limit: float | None,
    draw: bool,
    quiet: bool = False,
) -> int:
    """Follow run `name` until it finishes; its outcome's exit code (124 past `limit` s).
    `draw`: a live screen; else one line per change (none with `quiet`, for `status`)."""
    deadline = None if limit is None else time.monotonic() + limit
    bp = await kube.get_run(name)
    name = bp["metadata"]["name"]  # @latest resolved once: the run followed stays the same
    seen: set[str] = set()
    failures: list[dict[str, Any]] = []
    last_key: tuple[Any, ...] | None = None
    live = Live(console=console, auto_refresh=False, transient=False) if draw else None
    if live is not None:
        live.start()
    try:
        while True:
            row = run_row(bp)
            fresh = _new_failures(bp, seen)
            failures += fresh
            if live is not None:
                detail = await load_detail(kube, bp)
                live.update(render.watch_view(detail, failures), refresh=True)
            elif not quiet and _change_key(row) != last_key:
                console.out(render.watch_line(row, datetime.now(UTC)), highlight=False)
                for failure in fresh:
                    console.out(
                        f"  failed {failure.get('id')}: {failure.get('code')}: "
                        f"{failure.get('message')}",
                        highlight=False,
                    )
            last_key = _change_key(row)
            code = row.exit_code
            if code is not None:
                if quiet:
                    console.out(row.phase, highlight=False)
                return code
            if deadline is not None and time.monotonic() >= deadline:
                console.out(f"timed out after {limit:g}s: {name} is {row.phase}", highlight=False)
                return EXIT_TIMEOUT
            await asyncio.sleep(POLL_SECONDS)
            bp = await kube.get_run(name)
    finally:
        if live is not None:
            live.stop()
