"""A BatchPrediction through the real operator, the real Job controller and real Triton:
what a user sees with kubectl, in output storage and in Events."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.e2e.conftest import (
    OperatorProcess,
    assert_run_truth,
    batch_prediction,
    child_job,
    get_bp,
)
from tests.harness.fixtures import Cluster
from tests.harness.triton_server import TritonHandle


def kubectl_get_row(cluster: Cluster, name: str, namespace: str) -> dict[str, str]:
    """`kubectl get bp NAME` parsed by its header, as a user reads it."""
    out = cluster.kubectl("get", "bp", name, "-n", namespace).stdout.splitlines()
    header, row = out[0], out[1]
    starts = [header.index(col) for col in header.split("  ") if col.strip()]
    names = [col.strip() for col in header.split("  ") if col.strip()]
    bounds = [*starts[1:], None]
    return {n: row[s:e].strip() for n, s, e in zip(names, starts, bounds, strict=True)}


def test_a_run_succeeds_with_live_progress(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    dataset: Path,
    tmp_path: Path,
) -> None:
    output = tmp_path / "out"
    bp = batch_prediction(
        "score", triton_server, dataset, output, batching={"batchSize": 4, "concurrency": 1}
    )
    cluster.apply(bp, namespace)
    seen: list[dict[str, str]] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        row = kubectl_get_row(cluster, "score", namespace)
        seen.append(row)
        if row["PHASE"] in {"Succeeded", "Failed", "PartiallySucceeded"}:
            break
        time.sleep(0.5)
    phases = [r["PHASE"] for r in seen]
    assert "Running" in phases, phases
    running = [
        int(r["PROGRESS"].rstrip("%"))
        for r in seen
        if r["PHASE"] == "Running" and r["PROGRESS"].endswith("%")
    ]
    assert len(set(running)) >= 2, f"progress never grew while Running: {running}"
    assert running == sorted(running), f"progress went backwards: {running}"
    final = seen[-1]
    assert final["PHASE"] == "Succeeded", seen[-3:]
    assert final["PROGRESS"] == "100%"
    assert final["SUCCEEDED"] == "3000"
    assert final["FAILED"] == "0"
    assert final["STARTED BY"] not in {"", "<none>"}, "the admission policy records the user"

    status = get_bp(cluster, "score", namespace)["status"]
    assert status["items"] == {
        "total": 3000,
        "succeeded": 3000,
        "failed": 0,
        "retrying": 0,
        "pending": 0,
    }
    assert status["startTime"] <= status["completionTime"]
    assert status["shards"]["total"] == 4
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Complete"] == "True"
    assert conditions["ModelReady"] == "True"
    assert conditions["Failed"] == "False"
    cluster.kubectl("wait", "--for=condition=Complete", "bp/score", "-n", namespace, "--timeout=5s")

    assert_run_truth(cluster, "score", namespace, output, 3000)
    manifest = json.loads((output / "manifest.json").read_text())
    assert status["output"]["manifest"] == f"{output}/manifest.json"
    assert manifest

    wide = cluster.kubectl("get", "bp", "score", "-n", namespace, "-o", "wide").stdout
    for column in ("DATASET", "START", "END", "ITEMS/S", "ETA"):
        assert column in wide
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=score"
    ).stdout
    assert "Succeeded" in events and "Running" in events
    metrics = operator_process.metrics()
    assert 'batchpredict_runs{phase="Succeeded"}' in metrics
    assert 'batchpredict_jobs_created_total{role="shards"}' in metrics
    assert "batchpredict_status_patches_total" in metrics
    assert "batchpredict_reconcile_duration_seconds_count" in metrics
    jobs = cluster.get("jobs", namespace=namespace)["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == [
        child_job(cluster, "score", namespace, step) for step in ("finalize", "plan", "r0")
    ]
