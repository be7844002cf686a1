"""activeDeadlineSeconds and a manual retry: the retry gets a deadline window of its own."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.e2e.conftest import (
    SLOW_SMALL_CHUNKS,
    OperatorProcess,
    assert_run_truth,
    batch_prediction,
    wait_for_phase,
    wait_until,
)
from tests.harness.fixtures import Cluster
from tests.harness.triton_server import TritonHandle

TERMINAL = {"Succeeded", "PartiallySucceeded", "Failed"}
DEADLINE = 20


def seconds_since(start: datetime, end: str) -> float:
    return (datetime.fromisoformat(end) - start).total_seconds()


def test_a_retry_after_the_deadline_runs_for_a_window_of_its_own(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    dataset: Path,
    tmp_path: Path,
) -> None:
    output = tmp_path / "out"
    # 3,000 items at 2 items per 50 ms request and 2 pods: longer than the deadline, twice.
    spec = {**SLOW_SMALL_CHUNKS, "batching": {"batchSize": 2, "concurrency": 1}}
    bp = batch_prediction(
        "late", triton_server, dataset, output, activeDeadlineSeconds=DEADLINE, **spec
    )
    cluster.apply(bp, namespace)
    first = wait_for_phase(
        cluster, name="late", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert first["phase"] == "Failed"
    assert "activeDeadlineSeconds" in first["message"], first["message"]
    done_first = first["items"]["succeeded"]
    assert done_first < 3000

    retried = datetime.now(UTC).replace(microsecond=0)  # status times are whole seconds
    cluster.kubectl("annotate", "bp", "late", "-n", namespace, "batchpredict.io/retry=again")
    wait_until(cluster, "late", namespace, lambda s: s.get("phase") == "Running", "Running")
    second = wait_for_phase(
        cluster,
        name="late",
        namespace=namespace,
        phases=TERMINAL,
        timeout=240,
        operator=operator_process,
    )["status"]
    # The retry ran for its own window (it did not fail again at once) and made progress.
    assert second["lastRetryRequest"] == "again"
    window = seconds_since(retried, second["completionTime"])
    assert window >= DEADLINE, f"the retry was stopped {window:.0f}s after it was asked for"
    assert seconds_since(retried, second["retryStartTime"]) >= 0, "the window opens at the retry"
    assert second["items"]["succeeded"] > done_first, (done_first, second["items"])
    if second["phase"] == "Failed":  # it may finish inside the window on a fast machine
        assert "activeDeadlineSeconds" in second["message"], second["message"]
    assert_run_truth(cluster, "late", namespace, output, 3000)
