"""Runs with `queueName` under the real Kueue controller (built from its Go module, run beside
the local control plane: tests/harness/kueue.py) with a ResourceFlavor, a ClusterQueue and a
LocalQueue: a run waits in the queue while another workload holds the quota, with its position
and time waited in its message, then is admitted and runs; suspend stops its pods through the
Workload; a resumed run waits for the operator's maxRunning slot before Kueue sees it again."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    SLOW_SMALL_CHUNKS,
    OperatorProcess,
    assert_run_truth,
    batch_prediction,
    child_job,
    free_port,
    get_bp,
    pods_of,
    wait_for_phase,
    wait_until,
    write_items,
)
from tests.harness.fixtures import Cluster
from tests.harness.kueue import KueueProcess, start_kueue
from tests.harness.triton_server import TritonHandle

TERMINAL = {"Succeeded", "PartiallySucceeded", "Failed", "Cancelled"}
# Each worker pod asks for half a CPU: a run of parallelism 2 needs the queue's whole quota.
WORKER = {"resources": {"requests": {"cpu": "500m"}}}
QUOTA_CPU = "1"


@pytest.fixture(scope="module")
def kueue(cluster: Cluster) -> Iterator[KueueProcess]:
    if not cluster.local:
        pytest.skip("Kueue runs as a host process beside the local control plane only")
    process = start_kueue(cluster)
    cluster.apply(
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": "default-flavor"},
        }
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def kueue_operator(
    kueue: KueueProcess, operator_process: OperatorProcess
) -> Iterator[OperatorProcess]:
    """The e2e operator, told that Kueue runs (it watches Workloads), with a cap of one run."""
    operator_process.reconfigure(kueue=True, maxRunning=1)
    yield operator_process
    operator_process.reconfigure()


@pytest.fixture
def local_queue(cluster: Cluster, kueue: KueueProcess, namespace: str) -> Iterator[str]:
    """A LocalQueue `batch` in the test's namespace over its own ClusterQueue of 1 CPU."""
    cluster_queue = f"cq-{uuid.uuid4().hex[:6]}"
    cluster.apply(
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu"],
                        "flavors": [
                            {
                                "name": "default-flavor",
                                "resources": [{"name": "cpu", "nominalQuota": QUOTA_CPU}],
                            }
                        ],
                    }
                ],
            },
        }
    )
    cluster.apply(
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": "batch"},
            "spec": {"clusterQueue": cluster_queue},
        },
        namespace,
    )
    yield "batch"
    cluster.kubectl("delete", "clusterqueue", cluster_queue, "--wait=false", check=False)


def blocker_job(queue: str) -> dict[str, Any]:
    """A plain Job in the queue that takes the whole quota until it is deleted."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "blocker", "labels": {"kueue.x-k8s.io/queue-name": queue}},
        "spec": {
            "suspend": True,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "sleep",
                            "image": "busybox",
                            "command": ["/bin/sleep", "600"],
                            "resources": {"requests": {"cpu": QUOTA_CPU}},
                        }
                    ],
                }
            },
        },
    }


def workload_of(cluster: Cluster, namespace: str, job_name: str) -> dict[str, Any] | None:
    job = cluster.get("job", job_name, namespace)
    if job is None:
        return None
    selector = f"kueue.x-k8s.io/job-uid={job['metadata']['uid']}"
    found = cluster.kubectl("get", "workloads", "-n", namespace, "-l", selector, "-o", "json")
    items = json.loads(found.stdout)["items"]
    return items[0] if items else None


def running_pods(cluster: Cluster, namespace: str, marker: str) -> list[str]:
    return [
        p["metadata"]["name"]
        for p in pods_of(cluster, namespace)
        if marker in p["metadata"]["name"]
        and p["status"].get("phase") in {"Pending", "Running"}
        and not p["metadata"].get("deletionTimestamp")
    ]


def test_a_queued_run_waits_for_quota_then_kueue_admits_it_and_it_runs(
    kueue_operator: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    local_queue: str,
    tmp_path: Path,
) -> None:
    cluster.apply(blocker_job(local_queue), namespace)
    cluster.wait_for_object(
        "job", "blocker", namespace, lambda j: not j["spec"].get("suspend"), "admitted by Kueue"
    )
    dataset = write_items(tmp_path / "items.jsonl", [float(n) for n in range(200)])
    output = tmp_path / "out"
    run = batch_prediction(
        "queued", triton_server, dataset, output, queueName=local_queue, worker=WORKER
    )
    cluster.apply(run, namespace)
    # Kueue's word on why it waits, the position and the time waited, in the run's message.
    queued = wait_until(
        cluster,
        "queued",
        namespace,
        lambda s: s.get("phase") == "Queued" and "insufficient" in (s.get("message") or ""),
        "Queued behind the blocker, with Kueue's reason",
        timeout=60,
    )
    assert re.match(
        r"waiting in Kueue LocalQueue batch: position 1 of 1 pending, "
        r"for (<1m|\d+m) \(since \d\d:\d\d:\d\dZ\); Kueue: .*insufficient unused quota",
        queued["message"],
    ), queued["message"]
    r0 = child_job(cluster, "queued", namespace, "r0")
    assert cluster.get("job", r0, namespace)["spec"]["suspend"] is True
    assert not running_pods(cluster, namespace, "-r0-")
    # The blocker ends: its quota goes back to the ClusterQueue and Kueue admits the run.
    cluster.kubectl("delete", "job", "blocker", "-n", namespace, "--wait=false")
    status = wait_for_phase(
        cluster, name="queued", namespace=namespace, phases=TERMINAL, operator=kueue_operator
    )["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    admitted = workload_of(cluster, namespace, r0)
    assert admitted is not None
    conditions = {c["type"]: c["status"] for c in admitted["status"]["conditions"]}
    assert conditions.get("Admitted") == "True" and conditions.get("Finished") == "True"
    assert_run_truth(cluster, "queued", namespace, output, 200)


def test_suspend_stops_a_queued_runs_pods_and_its_resume_waits_for_the_cap(
    kueue_operator: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    local_queue: str,
    tmp_path: Path,
) -> None:
    """Suspend deactivates the Workload (Kueue stops the pods, where a patch of the Job's
    suspend would be undone); the slot it gave back goes to the next run, and the resumed run
    waits for that one (maxRunning 1) before its Workload is back in Kueue's queue."""
    first_data = write_items(tmp_path / "first.jsonl", [float(n) for n in range(600)])
    first_out = tmp_path / "first"
    spec = {**SLOW_SMALL_CHUNKS, "queueName": local_queue}
    spec["worker"] = {**SLOW_SMALL_CHUNKS["worker"], **WORKER}
    cluster.apply(
        batch_prediction("first", triton_server, first_data, first_out, **spec), namespace
    )
    wait_until(
        cluster,
        "first",
        namespace,
        lambda s: (s.get("items") or {}).get("succeeded", 0) >= 40,
        "first: 40 items done",
    )
    r0 = child_job(cluster, "first", namespace, "r0")
    cluster.kubectl("patch", "bp", "first", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"suspend": true}}')  # fmt: skip
    cluster.wait_for(
        lambda: not running_pods(cluster, namespace, "first-"), "first's pods to stop", timeout=60
    )
    suspended = wait_for_phase(
        cluster,
        name="first",
        namespace=namespace,
        phases={"Suspended"},
        timeout=60,
        operator=kueue_operator,
    )["status"]
    assert "Workload is deactivated" in suspended["message"]
    parked = workload_of(cluster, namespace, r0)
    assert parked is not None and parked["spec"]["active"] is False
    assert cluster.get("job", r0, namespace)["spec"]["suspend"] is True

    # The slot first gave back goes to a second run (no queue: the cap alone decides), which
    # holds it while its plan step waits for a Triton that does not answer.
    unreachable = Unreachable(f"127.0.0.1:{free_port()}")
    cluster.apply(
        batch_prediction("second", unreachable, first_data, tmp_path / "second"), namespace
    )
    wait_until(
        cluster, "second", namespace, lambda s: s.get("phase") == "Pending", "second Pending"
    )
    resumed_at = datetime.now(UTC).replace(microsecond=0)
    cluster.kubectl("patch", "bp", "first", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"suspend": false}}')  # fmt: skip
    waiting = wait_until(
        cluster,
        "first",
        namespace,
        lambda s: s.get("phase") != "Suspended",
        "first to leave Suspended",
        timeout=30,
    )
    assert waiting["phase"] == "Queued" and "maxRunning" in waiting["message"], waiting
    time.sleep(3)  # a few reconciles: the first stays out of Kueue's queue, its pods stopped
    parked = workload_of(cluster, namespace, r0)
    assert parked is not None and parked["spec"]["active"] is False
    assert not running_pods(cluster, namespace, "first-")
    assert get_bp(cluster, "first", namespace)["status"]["phase"] == "Queued"
    # The second ends (cancelled): its slot goes to the first, whose Workload goes back to
    # Kueue's queue, is admitted, and the run carries on where it stopped.
    cluster.kubectl("annotate", "bp", "second", "-n", namespace, "batchpredict.io/cancel=true")
    second = wait_for_phase(
        cluster, name="second", namespace=namespace, phases=TERMINAL, operator=kueue_operator
    )["status"]
    assert second["phase"] == "Cancelled", second.get("message")
    first = wait_for_phase(
        cluster, name="first", namespace=namespace, phases=TERMINAL, operator=kueue_operator
    )["status"]
    assert first["phase"] == "Succeeded", first.get("message")
    resumed = workload_of(cluster, namespace, r0)
    assert resumed is not None and resumed["spec"]["active"] is True
    # The cap held: no pod of the first started again before the second had ended.
    ended = parse_time(second["completionTime"]).replace(microsecond=0)
    restarted = [
        parse_time(p["metadata"]["creationTimestamp"])
        for p in pods_of(cluster, namespace)
        if p["metadata"]["name"].startswith(r0)
        and parse_time(p["metadata"]["creationTimestamp"]) >= resumed_at
    ]
    assert restarted, "the first run's shards ran again after the resume"
    assert min(restarted) >= ended, (min(restarted), ended)
    assert_run_truth(cluster, "first", namespace, first_out, 600)


@dataclass(frozen=True)
class Unreachable:
    """A Triton address where nothing listens."""

    grpc_url: str


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
