"""Indexed Jobs run for real: the Job controller, the scheduler and the node agent together."""

from __future__ import annotations

import os
from typing import Any

from tests.cluster.manifests import condition, indexed_job, job_pods, terminated
from tests.harness.fixtures import Cluster

INDEX = "import os; print(os.environ['JOB_COMPLETION_INDEX'])"


def finished_job(cluster: Cluster, name: str, namespace: str, timeout: float = 120) -> Any:
    def done() -> Any:
        job = cluster.get("job", name, namespace)
        for kind in ("Complete", "Failed"):
            if job and condition(job, kind).get("status") == "True":
                return job
        return None

    return cluster.wait_for(done, f"job {name} to finish", timeout=timeout)


def pods_of(cluster: Cluster, job: str, namespace: str) -> list[dict[str, Any]]:
    listing = cluster.get("pods", None, namespace)
    return [p for p in listing["items"] if p["metadata"]["labels"].get("job-name") == job]


def test_indexed_job_completes_every_index(cluster: Cluster, namespace: str) -> None:
    cluster.apply(indexed_job("index", INDEX, completions=5, parallelism=2), namespace)

    job = finished_job(cluster, "index", namespace)

    assert condition(job, "Complete")["status"] == "True"
    assert job["status"]["completedIndexes"] == "0-4"
    assert job["status"]["succeeded"] == 5
    pods = pods_of(cluster, "index", namespace)
    assert len(pods) == 5
    for pod in pods:
        index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        assert pod["status"]["phase"] == "Succeeded"
        assert terminated(pod)["exitCode"] == 0
        logs = cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"]).stdout
        assert logs.strip() == index


def test_failing_index_is_retried_per_index(cluster: Cluster, namespace: str) -> None:
    code = "import os, sys; sys.exit(3 if os.environ['JOB_COMPLETION_INDEX'] == '1' else 0)"
    manifest = indexed_job("flaky", code, completions=2, parallelism=2, backoffLimitPerIndex=1)
    cluster.apply(manifest, namespace)

    job = finished_job(cluster, "flaky", namespace)

    assert condition(job, "Failed")["reason"] == "FailedIndexes"
    assert job["status"]["completedIndexes"] == "0"
    assert job["status"]["failedIndexes"] == "1"
    pods = pods_of(cluster, "flaky", namespace)
    failing = job_pods(pods, 1)
    # The first run and the one retry that backoffLimitPerIndex: 1 allows.
    assert len(failing) == 2
    for pod in failing:
        assert pod["status"]["phase"] == "Failed"
        assert terminated(pod)["exitCode"] == 3
        assert terminated(pod)["reason"] == "Error"
    assert len(job_pods(pods, 0)) == 1


def test_pod_failure_policy_fails_the_index_at_once(cluster: Cluster, namespace: str) -> None:
    code = (
        "import os, sys; i = os.environ['JOB_COMPLETION_INDEX']\n"
        "open('/dev/termination-log' if not os.environ.get('BATCHPREDICT_CONTAINER_ROOT') else "
        "os.environ['BATCHPREDICT_CONTAINER_ROOT'] + '/dev/termination-log', 'w')"
        ".write('bad shard ' + i)\n"
        "sys.exit(42 if i == '2' else 0)"
    )
    policy = {"rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [42]}}]}
    manifest = indexed_job(
        "policy",
        code,
        completions=3,
        parallelism=3,
        backoffLimitPerIndex=3,
        podFailurePolicy=policy,
    )
    cluster.apply(manifest, namespace)

    job = finished_job(cluster, "policy", namespace)

    assert job["status"]["failedIndexes"] == "2"
    assert job["status"]["completedIndexes"] == "0,1"
    bad = job_pods(pods_of(cluster, "policy", namespace), 2)
    # FailIndex: no retry although backoffLimitPerIndex would allow three.
    assert len(bad) == 1
    assert terminated(bad[0])["exitCode"] == 42
    assert terminated(bad[0])["message"] == "bad shard 2"


def test_deleting_a_job_deletes_its_pods(cluster: Cluster, namespace: str) -> None:
    sleep = "import time; print('started', flush=True); time.sleep(600)"
    cluster.apply(indexed_job("sleepy", sleep, completions=2, parallelism=2), namespace)

    def both_running() -> list[dict[str, Any]]:
        pods = pods_of(cluster, "sleepy", namespace)
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        return running if len(running) == 2 else []

    running = cluster.wait_for(both_running, "both pods running")
    pids = [
        int(p["status"]["containerStatuses"][0]["containerID"].removeprefix("local://"))
        for p in running
        if cluster.local
    ]

    cluster.kubectl("delete", "job", "sleepy", "-n", namespace, "--cascade=background")

    cluster.wait_for(lambda: not pods_of(cluster, "sleepy", namespace), "pods deleted", timeout=60)
    for pid in pids:  # the node agent stopped the processes before the pods went away
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"container process {pid} still runs after its pod was deleted")
