"""JSONL and CSV planned by byte ranges, against a real tritonserver: the plan reads no row,
each shard counts its own range, and every item ends once in predictions or failures through
malformed rows, a retry round and a shard that never ran."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from batchpredict.worker.main import run
from tests.e2e.invariant import ids_by_byte_ranges
from tests.harness.triton_server import TritonHandle
from tests.triton.support import assert_each_id_once, final_failures, predictions, worker_env

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_byte_ranges_keep_each_item_once_through_rounds(
    triton_server: TritonHandle, tmp_path: Path, fmt: str
) -> None:
    n = 900
    bad = {5, 400, 899}  # malformed rows: a truncated JSON object, a CSV row with extra fields
    lines = []
    for i in range(n):
        if fmt == "jsonl":
            row = json.dumps({"x": i * 0.5})
            lines.append(row[:-2] if i in bad else row)
        else:
            lines.append(f"{i * 0.5}" + (",extra" if i in bad else ""))
        if i % 97 == 0:
            lines.append("")  # empty lines: no item
    text = ("x\r\n" if fmt == "csv" else "") + "\r\n".join(lines)  # CRLF, no final newline
    path = tmp_path / f"in.{fmt}"
    path.write_bytes(text.encode())
    out = tmp_path / "out"
    spec = {
        "model": {"name": "flaky"},
        "triton": {"url": triton_server.grpc_url},
        "input": {"uri": str(path), "format": fmt, "byteRanges": True},
        "output": {"uri": str(out), "includeFields": ["x"]},
        "shards": 5,
        "retry": {"requestAttempts": 1},
    }
    env = worker_env(spec, tmp_path, BATCHPREDICT_CHUNK_ITEMS="64")
    assert run("plan", env) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert (plan["total"], plan["shards"], plan["byteRanges"]) == (None, 5, True)
    ids = ids_by_byte_ranges(path, plan["splits"], header=fmt == "csv")
    assert len(ids) == n

    flag = triton_server.model_repository / "flaky" / "unavailable_until"
    flag.write_text(str(time.time() + 3600))  # round 0: shard 0 meets an unavailable model
    try:
        assert run("shard", {**env, "JOB_COMPLETION_INDEX": "0"}) == 0
    finally:
        flag.write_text("0")
    for shard in ("1", "2", "3"):  # shard 4's pod never runs in round 0
        assert run("shard", {**env, "JOB_COMPLETION_INDEX": shard}) == 0
    counted = [
        json.loads((out / f"splits/shard-0000{s}.json").read_text())["items"] for s in range(4)
    ]
    round0 = json.loads((out / "rounds/000/shard-00000/manifest.json").read_text())
    assert round0["items"] == counted[0] and round0["retryableFailed"] > 0
    # Round 1: every shard, shard 0 redoing its retryable failures, shard 4 its whole range.
    for shard in range(5):
        round1 = {**env, "JOB_COMPLETION_INDEX": str(shard), "BATCHPREDICT_ROUND": "1"}
        assert run("shard", round1) == 0
    redone = json.loads((out / "rounds/001/shard-00000/manifest.json").read_text())
    assert redone["items"] == round0["retryableFailed"]
    assert run("finalize", {**env, "BATCHPREDICT_ROUND": "1"}) == 0

    summary = json.loads((out / "manifest.json").read_text())
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (n, n - 3, 3)
    assert_each_id_once(out, set(ids))
    failures = final_failures(out)
    assert all(f["code"] == "MALFORMED_ITEM" for f in failures)
    for failure in failures:  # the malformed lines, each with where it is
        assert (b"extra" in ids[failure["id"]]) or not ids[failure["id"]].strip().endswith(b"}")
        assert f"of {path.name}" in failure["message"] and "line " in failure["message"]
    assert {r["id"]: r["y"] for r in predictions(out)} == {
        i: float(line.decode().strip().strip("{}").split(":")[-1]) * 2
        for i, line in ids.items()
        if i not in {f["id"] for f in failures}
    }
