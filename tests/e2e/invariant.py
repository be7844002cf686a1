"""The shared end-of-run check (DESIGN.md section 9): status == manifest == files, every input
id exactly once in the predictions or the failure record, and no finished run with pending or
retrying items. Every end-to-end run ends with `assert_run_truth`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.harness.fixtures import Cluster

TERMINAL = {"Succeeded", "PartiallySucceeded", "Failed", "Cancelled"}


def _ids(paths: Iterable[Path]) -> list[str]:
    return [
        str(json.loads(line)["id"])
        for path in sorted(paths)
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def assert_each_item_once(output: Path, ids: int | Iterable[str]) -> tuple[list[str], list[str]]:
    """Every id once in the predictions or the final failures; (predicted, failed) ids."""
    expected = {f"item-{n}" for n in range(ids)} if isinstance(ids, int) else set(ids)
    predicted = _ids((output / "rounds").rglob("predictions-*.jsonl"))
    failures = output / "failures.jsonl"
    failed = _ids([failures] if failures.exists() else [])
    twice = [i for i, n in Counter(predicted).items() if n > 1]
    assert not twice, f"predicted more than once: {twice[:5]}"
    assert len(failed) == len(set(failed)), "an item failed twice in the final record"
    both = set(predicted) & set(failed)
    assert not both, f"both predicted and failed: {sorted(both)[:5]}"
    missing = expected - set(predicted) - set(failed)
    assert not missing, (
        f"{len(missing)} items in neither predictions nor failures: {sorted(missing)[:5]}"
    )
    extra = (set(predicted) | set(failed)) - expected
    assert not extra, f"ids that are not in the input: {sorted(extra)[:5]}"
    return predicted, failed


def assert_run_truth(
    cluster: Cluster, name: str, namespace: str, output: Path, ids: int | Iterable[str]
) -> dict[str, Any]:
    """The finished run's status, manifest.json and files agree, each id once; its status."""
    body = cluster.get("batchpredictions.batchpredict.io", name, namespace)
    assert body is not None, f"BatchPrediction {name} is gone"
    status = body.get("status") or {}
    assert status.get("phase") in TERMINAL, f"{name} has not finished: {status.get('phase')}"
    predicted, failed = assert_each_item_once(output, ids)
    items = status.get("items") or {}
    assert items.get("pending", 0) == 0, f"a finished run shows pending items: {items}"
    assert items.get("retrying", 0) == 0, f"a finished run shows retrying items: {items}"
    manifest = json.loads((output / "manifest.json").read_text())
    files = {
        "total": len(predicted) + len(failed),
        "succeeded": len(predicted),
        "failed": len(failed),
    }
    shown = {k: items.get(k, 0) for k in files}
    counted = {k: manifest[k] for k in files}
    assert shown == counted == files, f"status {shown}, manifest {counted}, files {files}"
    assert status.get("progress") == "100%", status.get("progress")
    summary = sum(entry["count"] for entry in status.get("failureSummary") or [])
    assert summary == len(failed), f"failureSummary counts {summary}, failures.jsonl {len(failed)}"
    by_code = Counter(json.loads(line)["code"] for line in _lines(output / "failures.jsonl"))
    assert {e["code"]: e["count"] for e in status.get("failureSummary") or []} == dict(by_code)
    shown_failed = {i["id"] for i in status.get("failedItems") or []}
    assert shown_failed <= set(failed), (
        f"failedItems not in failures.jsonl: {shown_failed - set(failed)}"
    )
    return dict(status)


def ids_by_byte_ranges(path: Path, splits: list[list[Any]], *, header: bool) -> dict[str, bytes]:
    """Id -> line of every item of a text file planned by byte ranges (plan.json's
    `splits`), derived from the bytes alone: a range [start, end) holds the non-blank lines
    that start in it (after a CSV header), its k-th one has the id `<file>:<start>+<k>`."""
    data = path.read_bytes()
    starts = [0] + [i + 1 for i, b in enumerate(data) if b == ord("\n") and i + 1 < len(data)]
    ids: dict[str, bytes] = {}
    for _, start, end in splits:
        k = 0
        for line_start in starts:
            if not start <= line_start < end or (header and line_start == 0):
                continue
            line = data[line_start : data.find(b"\n", line_start) + 1 or len(data)]
            if line.strip():
                ids[f"{path.name}:{start}+{k}"] = line
                k += 1
    return ids


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
