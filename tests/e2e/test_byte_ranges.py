"""JSONL and CSV planned by byte ranges through the real operator: `kubectl get` says the total
is unknown until the shards have counted their ranges, then the run ends with every item once,
through a malformed row and a retry round."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import OperatorProcess, get_bp, wait_for_phase
from tests.e2e.invariant import assert_run_truth, ids_by_byte_ranges
from tests.e2e.test_run_end_to_end import kubectl_get_row
from tests.harness.fixtures import Cluster
from tests.harness.triton_server import TritonHandle

TERMINAL = {"Succeeded", "PartiallySucceeded", "Failed"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_text_dataset_by_byte_ranges_learns_its_total_and_keeps_each_item_once(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    fmt: str,
) -> None:
    rows = [json.dumps({"x": float(n)}) if fmt == "jsonl" else str(float(n)) for n in range(200)]
    rows[77] = '{"x": 7' if fmt == "jsonl" else "7.0,extra"  # malformed: fails alone
    path = tmp_path / f"items.{fmt}"
    path.write_text(("x\n" if fmt == "csv" else "") + "\n".join(rows) + "\n")
    output = tmp_path / "out"
    name = f"bytes-{fmt}"
    flag = triton_server.model_repository / "flaky" / "unavailable_until"
    flag.write_text(str(time.time() + 3600))  # round 0: every request UNAVAILABLE
    body = {
        "apiVersion": "batchpredict.io/v1alpha1",
        "kind": "BatchPrediction",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "flaky"},
            "triton": {"url": triton_server.grpc_url},
            "input": {"uri": str(path), "format": fmt, "byteRanges": True},
            "output": {"uri": str(output)},
            "parallelism": 1,  # one shard at a time: the others have not counted yet
            "shards": 4,
            "retry": {
                "requestAttempts": 1,
                "maxRounds": 3,
                "backoff": {"initialSeconds": 2, "factor": 1, "jitter": 0},
            },
        },
    }
    try:
        cluster.apply(body, namespace)
        unknown: list[tuple[str, dict[str, object]]] = []

        def retrying() -> bool:
            # The row first: a total once learned is never unset, so a status read after it
            # without a total means the row had none either.
            row = kubectl_get_row(cluster, name, namespace)
            status = get_bp(cluster, name, namespace).get("status") or {}
            items = status.get("items") or {}
            running = status.get("phase") == row["PHASE"] == "Running"
            if running and items.get("total") is None:
                unknown.append((row["PROGRESS"], items))
            return status.get("phase") == "Retrying"

        cluster.wait_for(retrying, "phase Retrying", timeout=180, interval=0.2)
    finally:
        flag.write_text("0")
    assert unknown, "the total was never shown as unknown while shards counted"
    for progress, items in unknown:
        # The column and the counts say what is known: no percentage, nothing pending.
        assert progress.endswith("done, total unknown"), unknown
        assert items.get("pending") is None, unknown
    status = wait_for_phase(
        cluster, name=name, namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert status["phase"] == "PartiallySucceeded", status.get("message")
    assert status["round"] >= 1
    assert status["shards"]["byteRanges"] is True
    assert (status["items"]["total"], status["items"]["failed"]) == (200, 1)
    plan = json.loads((output / "plan.json").read_text())
    ids = ids_by_byte_ranges(path, plan["splits"], header=fmt == "csv")
    assert len(ids) == 200
    assert_run_truth(cluster, name, namespace, output, ids)
    (failed,) = status["failedItems"]
    assert failed["code"] == "MALFORMED_ITEM" and b"7" in ids[failed["id"]]
    assert f"of {path.name}" in failed["message"]
    assert get_bp(cluster, name, namespace)["status"]["progress"] == "100%"
