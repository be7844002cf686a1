"""Retry rounds and the lifecycle controls, end to end: what `kubectl` shows, what storage
holds, and every item exactly once in predictions or failures."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.e2e.conftest import (
    SLOW,
    OperatorProcess,
    assert_run_truth,
    batch_prediction,
    pods_of,
    start_slow_run,
    wait_for_phase,
    wait_until,
    write_items,
)
from tests.harness.fixtures import Cluster
from tests.harness.triton_server import TritonHandle

TERMINAL = {"Succeeded", "PartiallySucceeded", "Failed", "Cancelled"}


def events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, str]]:
    out = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
    ).stdout
    return [{"reason": e["reason"], "message": e["message"]} for e in json.loads(out)["items"]]


def test_transient_failures_succeed_in_a_later_round_with_backoff(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    dataset = write_items(tmp_path / "items.jsonl", [float(n) for n in range(200)])
    output = tmp_path / "out"
    # UNAVAILABLE until healed: with one attempt per request, round 0 fails every item, retryably.
    flag = triton_server.model_repository / "flaky" / "unavailable_until"
    flag.write_text(str(time.time() + 3600))
    spec = {
        "model": {"name": "flaky"},
        "retry": {
            "requestAttempts": 1,
            "maxRounds": 4,
            "backoff": {"initialSeconds": 4, "factor": 2},
        },
    }
    try:
        cluster.apply(batch_prediction("flaky", triton_server, dataset, output, **spec), namespace)
        retrying = wait_until(
            cluster, "flaky", namespace, lambda s: s.get("phase") == "Retrying", "phase Retrying"
        )
    finally:
        flag.write_text("0")  # the server recovers
    assert retrying["nextRetryTime"]
    assert retrying["items"]["retrying"] > 0
    status = wait_for_phase(
        cluster, name="flaky", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["round"] >= 1
    assert status["items"]["succeeded"] == 200
    assert [j["round"] for j in status["jobs"]] == list(range(status["round"] + 1))
    reasons = [e["reason"] for e in events(cluster, namespace, "flaky")]
    assert "Retrying" in reasons and "RetryRoundStarted" in reasons
    assert_run_truth(cluster, "flaky", namespace, output, 200)


def test_manual_retry_after_a_fix_brings_the_run_to_succeeded(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    values = [-1.0 if n % 50 == 0 else float(n) for n in range(200)]
    dataset = write_items(tmp_path / "items.jsonl", values)
    output = tmp_path / "out"
    gate = triton_server.model_repository / "gate" / "open"
    gate.unlink(missing_ok=True)
    cluster.apply(
        batch_prediction("gated", triton_server, dataset, output, model={"name": "gate"}), namespace
    )
    first = wait_for_phase(
        cluster, name="gated", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert first["phase"] == "PartiallySucceeded"
    assert first["items"]["failed"] == 4
    gate.write_text("fixed")
    try:
        cluster.kubectl("annotate", "bp", "gated", "-n", namespace, "batchpredict.io/retry=fix-1")
        wait_until(cluster, "gated", namespace, lambda s: s.get("phase") == "Running", "Running")
        status = wait_for_phase(
            cluster, name="gated", namespace=namespace, phases=TERMINAL, operator=operator_process
        )["status"]
    finally:
        gate.unlink(missing_ok=True)
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["items"] == {
        "total": 200,
        "succeeded": 200,
        "failed": 0,
        "retrying": 0,
        "pending": 0,
    }
    assert status["lastRetryRequest"] == "fix-1"
    assert_run_truth(cluster, "gated", namespace, output, 200)


def test_suspend_then_resume_completes_with_exact_counts(
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
        name="pausable",
        namespace=namespace,
        triton=triton_server,
        dataset=dataset,
        output=output,
        succeeded=1,
    )
    cluster.kubectl(
        "patch",
        "bp",
        "pausable",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"suspend": true}}',
    )
    suspended = wait_until(
        cluster, "pausable", namespace, lambda s: s.get("phase") == "Suspended", "Suspended"
    )
    cluster.wait_for(
        lambda: not [p for p in pods_of(cluster, namespace) if "-r0-" in p["metadata"]["name"]],
        "the worker pods to stop",
    )
    kept = suspended["items"]["succeeded"]
    assert kept > 0
    cluster.kubectl(
        "patch",
        "bp",
        "pausable",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"suspend": false}}',
    )
    status = wait_for_phase(
        cluster, name="pausable", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["items"]["succeeded"] == 3000
    assert_run_truth(cluster, "pausable", namespace, output, 3000)


def test_cancel_stops_the_pods_and_keeps_the_outputs(
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
        name="stopme",
        namespace=namespace,
        triton=triton_server,
        dataset=dataset,
        output=output,
        succeeded=80,
    )
    cluster.kubectl("annotate", "bp", "stopme", "-n", namespace, "batchpredict.io/cancel=true")
    status = wait_for_phase(
        cluster, name="stopme", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert status["phase"] == "Cancelled"
    assert status["items"]["succeeded"] > 0
    cluster.wait_for(
        lambda: (
            not pods_of(cluster, namespace)
            or all(
                p["status"].get("phase") in {"Succeeded", "Failed"}
                for p in pods_of(cluster, namespace)
            )
        ),
        "the worker pods to stop",
    )
    assert cluster.get("bp", "stopme", namespace) is not None, "cancel is not delete"
    assert list((output / "rounds").rglob("predictions-*.jsonl")), "committed chunks are kept"
    final = assert_run_truth(cluster, "stopme", namespace, output, 3000)
    assert {e["code"] for e in final["failureSummary"]} == {"NOT_PROCESSED"}


def test_the_cap_queues_the_third_run_until_one_finishes(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    operator_process.reconfigure(maxRunning=2)
    try:
        long_data = write_items(tmp_path / "long.jsonl", [float(n) for n in range(800)])
        short_data = write_items(tmp_path / "short.jsonl", [float(n) for n in range(100)])
        for name, data in (("first", long_data), ("second", short_data), ("third", short_data)):
            bp = batch_prediction(name, triton_server, data, tmp_path / name, **SLOW)
            cluster.apply(bp, namespace)
            time.sleep(1.1)  # creation timestamps have one-second resolution: keep FIFO order
        third = wait_until(
            cluster, "third", namespace, lambda s: s.get("phase") == "Queued", "third Queued"
        )
        assert "maxRunning" in third["message"]
        assert not [
            j
            for j in cluster.get("jobs", namespace=namespace)["items"]
            if j["metadata"]["name"].startswith("third")
        ]
        wait_for_phase(
            cluster, name="second", namespace=namespace, phases=TERMINAL, operator=operator_process
        )
        status = wait_for_phase(
            cluster, name="third", namespace=namespace, phases=TERMINAL, operator=operator_process
        )["status"]
        assert status["phase"] == "Succeeded"
        assert_run_truth(cluster, "third", namespace, tmp_path / "third", 100)
    finally:
        operator_process.reconfigure()
