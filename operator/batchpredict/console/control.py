"""Write verbs: `submit`, `retry`, `suspend`, `resume`, `cancel`. Each sends, with the user's
own credentials, the patch of actions.py (the same annotations and spec fields `kubectl
annotate`/`kubectl patch` would set) and returns what to tell the user."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from batchpredict.actions import cancel_patch, retry_patch, suspend_patch
from batchpredict.api.v1alpha1 import KIND
from batchpredict.api.validation import InvalidSpecError, parse_batch_prediction
from batchpredict.console.kube import ConsoleError, Kube
from batchpredict.console.runs import FINISHED, run_row


def read_runs(path: Path) -> list[dict[str, Any]]:
    """The BatchPredictions of a YAML file (`-` for stdin), checked as the operator reads them."""
    try:
        text = path.read_text() if str(path) != "-" else __import__("sys").stdin.read()
        documents = [d for d in yaml.safe_load_all(text) if d]
    except (OSError, yaml.YAMLError) as error:
        raise ConsoleError(f"{path}: cannot read: {error}") from None
    runs = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if not runs:
        raise ConsoleError(f"{path}: no {KIND} in it")
    for doc in runs:
        try:
            parse_batch_prediction(doc)
        except InvalidSpecError as error:
            name = (doc.get("metadata") or {}).get("name", "<no name>")
            raise ConsoleError(f"{path}: {name}: {'; '.join(error.problems)}") from None
    return runs


async def submit(kube: Kube, body: dict[str, Any]) -> dict[str, Any]:
    body = {**body, "metadata": {**(body.get("metadata") or {})}}
    body["metadata"].setdefault("namespace", kube.namespace)
    return await kube.create_run(body)


async def retry(kube: Kube, name: str, codes: Sequence[str] = ()) -> str:
    """Ask for a manual retry round of a finished run (only `codes`, when given)."""
    bp = await kube.get_run(name)
    row = run_row(bp)
    if row.phase not in FINISHED:
        raise ConsoleError(
            f"{row.name} is {row.phase}: retry applies to a finished run (its automatic "
            "rounds retry transient failures while it runs)"
        )
    if not row.failed:
        raise ConsoleError(f"{row.name} has no failed items to retry")
    entries = (bp.get("status") or {}).get("failureSummary") or []
    summary = {e["code"]: int(e["count"]) for e in entries}
    missing = [c for c in codes if c not in summary]
    if codes and len(missing) == len(codes):
        known = ", ".join(sorted(summary)) or "none"
        raise ConsoleError(
            f"{row.name} has no failures of code {', '.join(missing)} (it has: {known})"
        )
    await kube.patch_run(row.name, retry_patch(codes=codes))
    count = sum(summary.get(c, 0) for c in codes) if codes else row.failed
    which = f" of code {', '.join(sorted(codes))}" if codes else ""
    return f"batchprediction/{row.name}: retry of {count} failed items{which} requested"


async def suspend(kube: Kube, name: str, value: bool) -> str:
    bp = await kube.get_run(name)
    row = run_row(bp)
    if row.finished:
        what = "suspend" if value else "resume"
        raise ConsoleError(f"{row.name} is {row.phase}: nothing to {what}")
    await kube.patch_run(row.name, suspend_patch(value))
    return f"batchprediction/{row.name} {'suspended' if value else 'resumed'}"


async def cancel(kube: Kube, name: str) -> str:
    bp = await kube.get_run(name)
    row = run_row(bp)
    if row.finished:
        raise ConsoleError(f"{row.name} is {row.phase}: nothing to cancel")
    await kube.patch_run(row.name, cancel_patch())
    return f"batchprediction/{row.name}: cancel requested (what is done is kept and finalized)"
