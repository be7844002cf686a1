"""The fault suite (DESIGN.md section 9): shards broken in a retry round, Triton down at
different moments, the API server restarted, reports refused, the operator killed at random
points and during manual retries, names at the length limit. Every run ends with the shared
invariant check: status == manifest == files, each id once, nothing pending."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import (
    REPO,
    SLOW,
    OperatorProcess,
    assert_run_truth,
    batch_prediction,
    free_port,
    get_bp,
    wait_for_phase,
    wait_until,
    write_items,
)
from tests.e2e.faults import refuse_reports, restart_apiserver
from tests.harness.fixtures import Cluster
from tests.harness.triton_server import TritonHandle, own_triton

TERMINAL = {"Succeeded", "PartiallySucceeded", "Failed", "Cancelled"}
FAST_RETRY = {"initialSeconds": 2, "factor": 1, "jitter": 0}


def jobs_of(cluster: Cluster, namespace: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in cluster.get("jobs", namespace=namespace)["items"])


def assert_one_job_per_step(
    cluster: Cluster, name: str, namespace: str, manual_retries: int = 0
) -> None:
    """One plan Job, one shard Job per round 0..status.round (automatic rounds may come from
    transient errors under load), and exactly one round per manual retry request."""
    status = get_bp(cluster, name, namespace)["status"]
    jobs = cluster.get("jobs", namespace=namespace)["items"]
    roles = [j["metadata"]["labels"]["batchpredict.io/role"] for j in jobs]
    assert roles.count("plan") == 1, roles
    rounds = sorted(
        int(j["metadata"]["labels"]["batchpredict.io/round"])
        for j in jobs
        if j["metadata"]["labels"]["batchpredict.io/role"] == "shards"
    )
    assert rounds == list(range(status["round"] + 1)), rounds
    requests = [
        j["metadata"].get("annotations", {}).get("batchpredict.io/retry-request")
        for j in jobs
        if j["metadata"]["labels"]["batchpredict.io/role"] == "shards"
    ]
    manual = [r for r in requests if r]
    assert len(manual) == len(set(manual)) == manual_retries, manual
    assert all(len(j["metadata"]["name"]) <= 57 for j in jobs)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def test_a_shard_broken_for_good_in_round_one_is_counted_not_succeeded(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    dataset = write_items(tmp_path / "items.jsonl", [float(n) for n in range(200)])
    output = tmp_path / "out"
    flag = triton_server.model_repository / "flaky" / "unavailable_until"
    flag.write_text(str(time.time() + 3600))  # round 0: every request UNAVAILABLE
    spec = {
        "model": {"name": "flaky"},
        "retry": {
            "requestAttempts": 1,
            "maxRounds": 1,
            "backoff": {**FAST_RETRY, "initialSeconds": 5},
            "shardBackoffLimit": 0,
        },
        "failurePolicy": {"maxFailedPercent": 5},
    }
    try:
        cluster.apply(
            batch_prediction("broken-r1", triton_server, dataset, output, **spec), namespace
        )
        cluster.wait_for((output / "rounds" / "000").is_dir, "round 0 to start")
        # Round 1 cannot write: a file where its directory must go (its pods break, for good).
        (output / "rounds" / "001").write_text("in the way")
        wait_until(cluster, "broken-r1", namespace, lambda s: s.get("round") == 1, "round 1")
    finally:
        flag.write_text("0")
    status = wait_for_phase(
        cluster, name="broken-r1", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert status["phase"] == "Failed", status.get("message")
    assert status["items"]["failed"] == 200
    assert {e["code"] for e in status["failureSummary"]} == {"NOT_PROCESSED"}
    assert_run_truth(cluster, "broken-r1", namespace, output, 200)


def test_triton_down_during_the_retry_backoff_is_waited_out(
    operator_process: OperatorProcess,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    dataset = write_items(tmp_path / "items.jsonl", [float(n) for n in range(200)])
    output = tmp_path / "out"
    with own_triton(tmp_path / "triton", "flaky") as triton:
        flag = triton.repository / "flaky" / "unavailable_until"
        flag.write_text(str(time.time() + 3600))
        spec = {
            "model": {"name": "flaky"},
            "retry": {"requestAttempts": 1, "maxRounds": 2, "backoff": FAST_RETRY},
            "stallTimeoutSeconds": 120,
        }
        cluster.apply(batch_prediction("waits", triton, dataset, output, **spec), namespace)
        wait_until(cluster, "waits", namespace, lambda s: s.get("phase") == "Retrying", "Retrying")
        triton.stop()
        flag.write_text("0")
        stalled = wait_until(
            cluster,
            "waits",
            namespace,
            lambda s: condition(s, "Stalled").get("reason") == "TritonUnavailable",
            "the Stalled condition naming Triton",
            timeout=90,
        )
        assert triton.grpc_url in condition(stalled, "Stalled")["message"]
        assert stalled["phase"] == "Running", "Triton down is a state, not a failure"
        time.sleep(3)
        triton.start()
        status = wait_for_phase(
            cluster, name="waits", namespace=namespace, phases=TERMINAL, operator=operator_process
        )["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert condition(status, "Stalled")["status"] == "False"
    assert_run_truth(cluster, "waits", namespace, output, 200)


def test_triton_that_never_comes_back_ends_the_run_with_its_reason(
    operator_process: OperatorProcess,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    dataset = write_items(tmp_path / "items.jsonl", [float(n) for n in range(200)])
    output = tmp_path / "out"
    with own_triton(tmp_path / "triton", "flaky") as triton:
        flag = triton.repository / "flaky" / "unavailable_until"
        flag.write_text(str(time.time() + 3600))
        spec = {
            "model": {"name": "flaky"},
            "retry": {"requestAttempts": 1, "maxRounds": 1, "backoff": FAST_RETRY},
            "failurePolicy": {"maxFailedPercent": 5},
            "stallTimeoutSeconds": 10,
        }
        cluster.apply(batch_prediction("gone", triton, dataset, output, **spec), namespace)
        wait_until(cluster, "gone", namespace, lambda s: s.get("phase") == "Retrying", "Retrying")
        triton.stop()
        status = wait_for_phase(
            cluster, name="gone", namespace=namespace, phases=TERMINAL, operator=operator_process
        )["status"]
    assert status["phase"] == "Failed", status.get("message")
    assert condition(status, "Failed")["reason"] == "TritonUnavailable", json.dumps(status)
    assert triton.grpc_url in status["message"]
    assert_run_truth(cluster, "gone", namespace, output, 200)


def test_triton_restarted_in_the_middle_of_a_round(
    operator_process: OperatorProcess,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    dataset = write_items(tmp_path / "items.jsonl", [float(n) for n in range(600)])
    output = tmp_path / "out"
    with own_triton(tmp_path / "triton", "slow") as triton:
        spec = {
            **SLOW,
            "worker": {"env": [{"name": "BATCHPREDICT_CHUNK_ITEMS", "value": "40"}]},
            "retry": {"requestAttempts": 2, "maxRounds": 3, "backoff": FAST_RETRY},
        }
        cluster.apply(batch_prediction("mid", triton, dataset, output, **spec), namespace)
        wait_until(
            cluster,
            "mid",
            namespace,
            lambda s: (s.get("items") or {}).get("succeeded", 0) >= 40,
            "progress",
        )
        triton.stop()
        time.sleep(4)
        triton.start()
        status = wait_for_phase(
            cluster, name="mid", namespace=namespace, phases=TERMINAL, operator=operator_process
        )["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert_run_truth(cluster, "mid", namespace, output, 600)


def test_the_api_server_restarted_mid_run(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    dataset: Path,
    tmp_path: Path,
) -> None:
    output = tmp_path / "out"
    spec = {**SLOW, "worker": {"env": [{"name": "BATCHPREDICT_CHUNK_ITEMS", "value": "200"}]}}
    cluster.apply(batch_prediction("apiserver", triton_server, dataset, output, **spec), namespace)
    wait_until(
        cluster,
        "apiserver",
        namespace,
        lambda s: (s.get("items") or {}).get("succeeded", 0) > 0,
        "progress",
    )
    restart_apiserver(cluster)
    status = wait_for_phase(
        cluster, name="apiserver", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert_run_truth(cluster, "apiserver", namespace, output, 3000)


def test_refused_report_writes_still_end_with_exact_counts(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    values = [-1.0 if n % 40 == 0 else float(n) for n in range(400)]
    dataset = write_items(tmp_path / "items.jsonl", values)
    output = tmp_path / "out"
    policy = refuse_reports(namespace)
    for obj in policy:
        cluster.apply(obj)
    try:
        probe = {
            "apiVersion": "batchpredict.io/v1alpha1",
            "kind": "BatchPredictionShard",
            "metadata": {"name": "probe", "namespace": namespace},
            "spec": {"batchPrediction": "x", "runUid": "x", "round": 0, "shard": 0},
        }
        cluster.wait_for(
            lambda: (
                "refused"
                in cluster.kubectl(
                    "create", "--dry-run=server", "-f", "-", stdin=json.dumps(probe), check=False
                ).stderr
            ),
            "the policy to refuse reports",
        )
        bp = batch_prediction(
            "unreported", triton_server, dataset, output, model={"name": "reject"}
        )
        cluster.apply(bp, namespace)
        status = wait_for_phase(
            cluster,
            name="unreported",
            namespace=namespace,
            phases=TERMINAL,
            operator=operator_process,
        )["status"]
    finally:
        for obj in reversed(policy):
            cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], check=False)
    assert status["phase"] == "PartiallySucceeded", status.get("message")
    assert (status["items"]["succeeded"], status["items"]["failed"]) == (390, 10)
    assert status["round"] == 0, "the pods' exit summaries said there was nothing to retry"
    assert_run_truth(cluster, "unreported", namespace, output, 400)


def test_the_operator_killed_at_random_points_never_doubles_a_step(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    values = [-1.0 if n % 25 == 0 else float(n) for n in range(300)]
    dataset = write_items(tmp_path / "items.jsonl", values)
    output = tmp_path / "out"
    spec = {
        "model": {"name": "gate"},
        "batching": {"batchSize": 8, "concurrency": 1},
        "worker": {"env": [{"name": "BATCHPREDICT_CHUNK_ITEMS", "value": "20"}]},
    }
    rng = random.Random(13)  # noqa: S311 (kill times, not secrets)
    gate = triton_server.model_repository / "gate" / "open"
    gate.unlink(missing_ok=True)
    kills = 0
    try:
        cluster.apply(batch_prediction("killed", triton_server, dataset, output, **spec), namespace)
        for request in ("", "again"):
            if request:  # then a manual retry, killed right after it is asked for
                gate.write_text("open")
                cluster.kubectl(
                    "annotate", "bp", "killed", "-n", namespace, f"batchpredict.io/retry={request}"
                )
                time.sleep(rng.uniform(0.2, 1.5))
                operator_process.kill()
                kills += 1
                operator_process.start()
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                now = dict(get_bp(cluster, "killed", namespace).get("status") or {})
                retried = now.get("lastRetryRequest")
                if now.get("phase") in TERMINAL and (not request or retried == request):
                    break
                time.sleep(rng.uniform(0.1, 2.5))
                operator_process.kill()
                kills += 1
                time.sleep(rng.uniform(0.0, 1.0))
                operator_process.start()
            status = wait_for_phase(
                cluster,
                name="killed",
                namespace=namespace,
                phases=TERMINAL,
                operator=operator_process,
            )["status"]
            assert_run_truth(cluster, "killed", namespace, output, 300)
    finally:
        gate.unlink(missing_ok=True)
    assert kills >= 4
    assert status["phase"] == "Succeeded", status.get("message")
    assert_one_job_per_step(cluster, "killed", namespace, manual_retries=1)


def test_two_manual_retries_in_a_row(
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
    try:
        cluster.apply(
            batch_prediction("twice", triton_server, dataset, output, model={"name": "gate"}),
            namespace,
        )
        first = wait_for_phase(
            cluster, name="twice", namespace=namespace, phases=TERMINAL, operator=operator_process
        )["status"]
        assert (first["phase"], first["items"]["failed"]) == ("PartiallySucceeded", 4)
        for request, opened in (("1", False), ("2", True)):
            if opened:
                gate.write_text("open")
            cluster.kubectl(
                "annotate",
                "--overwrite",
                "bp",
                "twice",
                "-n",
                namespace,
                f"batchpredict.io/retry={request}",
            )
            wait_until(
                cluster,
                "twice",
                namespace,
                lambda s, r=request: s.get("lastRetryRequest") == r and s.get("phase") in TERMINAL,
                f"retry {request} to finish",
            )
            status = assert_run_truth(cluster, "twice", namespace, output, 200)
            assert status["items"]["failed"] == (0 if opened else 4)
    finally:
        gate.unlink(missing_ok=True)
    assert status["phase"] == "Succeeded"
    assert_one_job_per_step(cluster, "twice", namespace, manual_retries=2)


def test_a_run_named_with_253_characters_runs(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    name = ("long-" * 51)[:252] + "x"
    assert len(name) == 253
    dataset = write_items(tmp_path / "items.jsonl", [float(n) for n in range(100)])
    output = tmp_path / "out"
    cluster.apply(batch_prediction(name, triton_server, dataset, output), namespace)
    status = wait_for_phase(
        cluster, name=name, namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert all(len(j) <= 63 for j in jobs_of(cluster, namespace))
    assert_run_truth(cluster, name, namespace, output, 100)
    cluster.wait_for(
        lambda: not cluster.get("batchpredictionshards", namespace=namespace)["items"],
        "the finished run's reports to be removed",
    )


def serves(log: str) -> bool:
    """Whether a peered kopf operator's last word on peering is that it resumed."""
    return log.rfind("Resuming operations") > log.rfind("Pausing operations")


def test_two_replicas_the_active_one_killed_the_standby_finishes(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    dataset: Path,
    tmp_path: Path,
) -> None:
    """Two replicas with kopf peering, as the chart runs them with replicaCount > 1: one
    serves, the other stands by; the serving one is killed and the standby finishes the run."""
    cluster.kubectl("apply", "-f", str(REPO / "charts/batchpredict/crds/kopf.dev_peerings.yaml"))
    cluster.wait_for(
        lambda: cluster.kubectl("get", "clusterkopfpeerings", check=False).returncode == 0,
        "the peering CRD served",
    )
    peering = f"e2e-{namespace}"[:63]
    cluster.apply(
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": peering}}
    )
    operator_process.stop()  # the standalone one would serve the run too
    replicas = []
    for n in range(2):
        config = tmp_path / f"replica-{n}.yaml"
        settings = {**operator_process.base_config, "metricsPort": free_port()}
        config.write_text(yaml.safe_dump(settings))
        replica = OperatorProcess(
            cluster,
            config,
            tmp_path / f"replica-{n}.log",
            settings["metricsPort"],
            base_config=settings,
            args=("--peering", peering),
        )
        replica.start()
        replicas.append(replica)
    output = tmp_path / "out"
    try:
        spec = {**SLOW, "worker": {"env": [{"name": "BATCHPREDICT_CHUNK_ITEMS", "value": "200"}]}}
        cluster.apply(batch_prediction("ha", triton_server, dataset, output, **spec), namespace)
        wait_until(
            cluster,
            "ha",
            namespace,
            lambda s: (s.get("items") or {}).get("succeeded", 0) > 0,
            "progress",
        )

        # Peered replicas start paused; the one of the highest priority resumes and serves (one
        # that started alone serves until it sees a higher one, then pauses).
        def the_one_serving() -> OperatorProcess | None:
            found = [r for r in replicas if serves(r.log_path.read_text())]
            return found[0] if len(found) == 1 else None

        active = cluster.wait_for(
            the_one_serving, "exactly one replica serving, the other standing by"
        )
        (standby,) = [r for r in replicas if r is not active]
        active.kill()
        status = wait_for_phase(
            cluster,
            name="ha",
            namespace=namespace,
            phases=TERMINAL,
            timeout=300,
            operator=standby,
        )["status"]
        assert serves(standby.log_path.read_text()), "the standby took over"
    finally:
        for replica in replicas:
            replica.kill()
        operator_process.start()
    assert status["phase"] == "Succeeded", status.get("message")
    assert_one_job_per_step(cluster, "ha", namespace)
    assert_run_truth(cluster, "ha", namespace, output, 3000)


def test_an_evicted_worker_pod_is_not_an_item_failure(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    dataset: Path,
    tmp_path: Path,
) -> None:
    """A shard pod evicted mid-run (node drain, preemption: the API server marks it
    DisruptionTarget) is replaced without counting against the shard's retries, and no item
    fails for it."""
    output = tmp_path / "out"
    spec = {
        **SLOW,
        "worker": {"env": [{"name": "BATCHPREDICT_CHUNK_ITEMS", "value": "100"}]},
        "retry": {"shardBackoffLimit": 0, "maxRounds": 0},
    }
    cluster.apply(batch_prediction("evicted", triton_server, dataset, output, **spec), namespace)
    wait_until(
        cluster,
        "evicted",
        namespace,
        lambda s: (s.get("items") or {}).get("succeeded", 0) >= 100,
        "progress",
    )
    pods = cluster.get("pods", namespace=namespace)["items"]
    running = [
        p["metadata"]["name"]
        for p in pods
        if p["metadata"]["labels"].get("batchpredict.io/role") == "shards"
        and p["status"].get("phase") == "Running"
    ]
    assert running, "a shard pod to evict"
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": running[0], "namespace": namespace},
    }
    cluster.kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{namespace}/pods/{running[0]}/eviction",
        "-f",
        "-",
        stdin=json.dumps(eviction),
    )
    status = wait_for_phase(
        cluster, name="evicted", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    # With shardBackoffLimit 0, a counted pod failure would have failed the shard for good.
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["items"]["failed"] == 0
    assert_run_truth(cluster, "evicted", namespace, output, 3000)
