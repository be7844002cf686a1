"""Restart safety and deletion: kill the operator mid-run, delete a run mid-run."""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.conftest import (
    SLOW,
    OperatorProcess,
    assert_run_truth,
    batch_prediction,
    child_job,
    pods_of,
    start_slow_run,
    wait_for_phase,
    wait_until,
)
from tests.harness.fixtures import Cluster
from tests.harness.triton_server import TritonHandle

TERMINAL = {"Succeeded", "PartiallySucceeded", "Failed"}


def test_operator_killed_mid_run_leaves_one_job_and_exact_counts(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    dataset: Path,
    tmp_path: Path,
) -> None:
    output = tmp_path / "out"
    cluster.apply(batch_prediction("restart", triton_server, dataset, output, **SLOW), namespace)
    wait_until(
        cluster,
        "restart",
        namespace,
        lambda s: s.get("phase") == "Running" and (s.get("items") or {}).get("succeeded", 0) > 0,
        "the run to make progress",
    )
    operator_process.kill()
    time.sleep(3)  # the workers go on without the operator
    operator_process.start()
    status = wait_for_phase(
        cluster, name="restart", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["items"]["succeeded"] == 3000
    jobs = sorted(j["metadata"]["name"] for j in cluster.get("jobs", namespace=namespace)["items"])
    assert jobs == sorted(
        child_job(cluster, "restart", namespace, s) for s in ("finalize", "plan", "r0")
    )
    assert_run_truth(cluster, "restart", namespace, output, 3000)


def test_deleting_a_run_removes_its_jobs_and_pods_and_keeps_outputs(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    dataset: Path,
    tmp_path: Path,
) -> None:
    output = tmp_path / "out"
    start_slow_run(
        cluster,
        name="doomed",
        namespace=namespace,
        triton=triton_server,
        dataset=dataset,
        output=output,
        succeeded=80,
    )
    cluster.kubectl("delete", "bp", "doomed", "-n", namespace, "--wait=true", timeout=60)
    cluster.wait_for(
        lambda: not cluster.get("jobs", namespace=namespace)["items"], "the Jobs to be collected"
    )
    cluster.wait_for(lambda: not pods_of(cluster, namespace), "the pods to be gone")
    assert (output / "plan.json").exists()
    assert list((output / "rounds").rglob("predictions-*.jsonl")), "committed chunks are kept"
