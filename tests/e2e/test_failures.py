"""What a user sees when items, the dataset or the model are bad: a clear phase and reason,
the failed ids in status, and every item exactly once in predictions or failures."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import (
    OperatorProcess,
    assert_run_truth,
    batch_prediction,
    child_job,
    wait_for_phase,
    write_items,
)
from tests.harness.fixtures import Cluster
from tests.harness.triton_server import TritonHandle

TERMINAL = {"Succeeded", "PartiallySucceeded", "Failed"}


def test_rejected_items_end_partially_succeeded_with_their_ids(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    values = [-1.0 if n in {7, 123, 250} else float(n) for n in range(300)]
    dataset = write_items(tmp_path / "items.jsonl", values)
    output = tmp_path / "out"
    bp = batch_prediction("rejects", triton_server, dataset, output, model={"name": "reject"})
    cluster.apply(bp, namespace)
    body = wait_for_phase(
        cluster, name="rejects", namespace=namespace, phases=TERMINAL, operator=operator_process
    )
    status = body["status"]
    assert status["phase"] == "PartiallySucceeded", status.get("message")
    assert status["items"]["succeeded"] == 297
    assert status["items"]["failed"] == 3
    assert sorted(i["id"] for i in status["failedItems"]) == ["item-123", "item-250", "item-7"]
    for item in status["failedItems"]:
        assert "negative input -1.0 is not allowed" in item["message"]
        assert item["retryable"] is False
    assert status["round"] == 0, "non-retryable failures start no retry round"
    assert [s["count"] for s in status["failureSummary"]] == [3]
    assert_run_truth(cluster, "rejects", namespace, output, 300)


def test_a_missing_dataset_fails_the_run_with_its_reason(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere" / "items.jsonl"
    bp = batch_prediction("no-data", triton_server, missing, tmp_path / "out")
    cluster.apply(bp, namespace)
    status = wait_for_phase(
        cluster, name="no-data", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "DatasetNotFound"
    assert str(missing) in failed["message"]
    jobs = cluster.get("jobs", namespace=namespace)["items"]
    assert [j["metadata"]["name"] for j in jobs] == [
        child_job(cluster, "no-data", namespace, "plan")
    ], "no shard Job for a failed plan"


def test_a_missing_model_names_the_model_and_the_server(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    dataset: Path,
    tmp_path: Path,
) -> None:
    bp = batch_prediction(
        "no-model", triton_server, dataset, tmp_path / "out", model={"name": "nope"}
    )
    cluster.apply(bp, namespace)
    status = wait_for_phase(
        cluster, name="no-model", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert status["phase"] == "Failed"
    model_ready = next(c for c in status["conditions"] if c["type"] == "ModelReady")
    assert model_ready["status"] == "False"
    assert model_ready["reason"] in {"ModelNotFound", "ModelNotReady"}
    assert "nope" in model_ready["message"]
    assert triton_server.grpc_url in model_ready["message"]
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    warnings = [e for e in json.loads(events)["items"] if e["type"] == "Warning"]
    assert any(e["reason"] == "Failed" and "nope" in e["message"] for e in warnings)
