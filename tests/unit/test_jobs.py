"""Job and pod builders: plain data a user would see with `kubectl get job -o yaml`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchpredict.api.v1alpha1.report import report_name
from batchpredict.api.validation import parse_spec
from batchpredict.controller.config import NodePool, OperatorConfig
from batchpredict.names import MAX_JOB_NAME, MAX_LABEL, MAX_OBJECT_NAME
from batchpredict.reconcile.jobs import Owner, build_step_job, build_worker_job
from batchpredict.reconcile.naming import Role, child_labels, job_name
from batchpredict.worker import exit_codes

OWNER = Owner(name="nightly", namespace="ml", uid="0000-1111")
SPEC: dict[str, Any] = {
    "model": {"name": "echo"},
    "triton": {"url": "triton:8001"},
    "input": {"uri": "/data/in.jsonl", "format": "jsonl"},
    "output": {"uri": "/data/out/"},
    "parallelism": 3,
}
CONFIG = OperatorConfig(
    worker_image="registry.local/batchpredict:test",
    node_pools={
        "gpu": NodePool(
            node_selector={"pool": "gpu"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            resources={"limits": {"nvidia.com/gpu": 1}},
        )
    },
)


def spec_with(**changes: Any) -> Any:
    return parse_spec({**SPEC, **changes})


def container(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return result


def env(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(job)["env"]}


def test_worker_job_is_an_indexed_job_owned_by_the_run() -> None:
    job = build_worker_job(OWNER, spec_with(), CONFIG, shards=12, round_=0)
    assert job["metadata"]["name"] == "nightly-0000-111-r0"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "0000-1111"
    assert job["metadata"]["ownerReferences"][0]["controller"] is True
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == 12
    assert spec["parallelism"] == 3
    assert spec["backoffLimitPerIndex"] == 2
    assert spec["suspend"] is False
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert container(job)["command"] == ["batchpredict-worker", "shard"]
    assert container(job)["image"] == "registry.local/batchpredict:test"


def test_parallelism_never_exceeds_shards() -> None:
    job = build_worker_job(OWNER, spec_with(parallelism=50), CONFIG, shards=4, round_=0)
    assert job["spec"]["parallelism"] == 4


def test_pod_failure_policy_maps_the_worker_exit_codes() -> None:
    rules = build_worker_job(OWNER, spec_with(), CONFIG, shards=2, round_=0)["spec"][
        "podFailurePolicy"
    ]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert rules[1]["action"] == "FailJob"
    assert rules[1]["onExitCodes"]["values"] == [exit_codes.CANNOT_START]


def test_worker_env_carries_the_contract() -> None:
    job = build_worker_job(OWNER, spec_with(), CONFIG, shards=2, round_=1)
    values = env(job)
    assert json.loads(values["BATCHPREDICT_SPEC"])["model"] == {"name": "echo"}
    assert values["BATCHPREDICT_ROUND"] == "1"
    assert values["BATCHPREDICT_RUN_UID"] == "0000-1111"
    assert values["BATCHPREDICT_NAMESPACE"] == "ml"
    assert "BATCHPREDICT_TRITON_URL" not in values
    assert job["metadata"]["name"] == "nightly-0000-111-r1"


def test_pods_pass_pod_security_restricted() -> None:
    pod = build_worker_job(OWNER, spec_with(), CONFIG, shards=1, round_=0)["spec"]["template"]
    pod_spec = pod["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod_spec["containers"] + pod_spec.get("initContainers", []):
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_node_pool_gives_scheduling_and_gpu_resources() -> None:
    job = build_worker_job(OWNER, spec_with(worker={"nodePool": "gpu"}), CONFIG, shards=1, round_=0)
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert container(job)["resources"] == {"limits": {"nvidia.com/gpu": 1}}


def test_explicit_scheduling_adds_to_the_pool() -> None:
    worker = {
        "nodePool": "gpu",
        "nodeSelector": {"zone": "a"},
        "resources": {"limits": {"nvidia.com/gpu": 2}},
        "priorityClassName": "batch-low",
        "serviceAccountName": "reader",
    }
    job = build_worker_job(OWNER, spec_with(worker=worker), CONFIG, shards=1, round_=0)
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu", "zone": "a"}
    assert container(job)["resources"] == {"limits": {"nvidia.com/gpu": 2}}
    assert pod["priorityClassName"] == "batch-low"
    assert pod["serviceAccountName"] == "reader"


def test_triton_sidecar_is_a_native_sidecar_with_a_startup_probe() -> None:
    triton = {"sidecar": {"image": "tritonserver:25.10", "modelRepository": "/models"}}
    job = build_worker_job(OWNER, spec_with(triton=triton), CONFIG, shards=1, round_=0)
    pod = job["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "--model-repository=/models" in sidecar["args"]
    assert env(job)["BATCHPREDICT_TRITON_URL"] == "localhost:8001"


def test_default_triton_url_comes_from_operator_config() -> None:
    spec = parse_spec({k: v for k, v in SPEC.items() if k != "triton"})
    config = CONFIG.model_copy(update={"default_triton_url": "triton.shared:8001"})
    job = build_worker_job(OWNER, spec, config, shards=1, round_=0)
    assert env(job)["BATCHPREDICT_TRITON_URL"] == "triton.shared:8001"


def test_queued_and_suspended_runs_create_suspended_jobs() -> None:
    queued = build_worker_job(OWNER, spec_with(queueName="gpu-queue"), CONFIG, shards=1, round_=0)
    assert queued["spec"]["suspend"] is True
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    suspended = build_worker_job(OWNER, spec_with(suspend=True), CONFIG, shards=1, round_=0)
    assert suspended["spec"]["suspend"] is True


def test_step_jobs_run_one_pod() -> None:
    plan = build_step_job(OWNER, spec_with(), CONFIG, Role.PLAN)
    assert plan["metadata"]["name"] == "nightly-0000-111-plan"
    assert plan["spec"]["completions"] == 1
    assert container(plan)["command"] == ["batchpredict-worker", "plan"]
    finalize = build_step_job(OWNER, spec_with(), CONFIG, Role.FINALIZE)
    assert container(finalize)["command"] == ["batchpredict-worker", "finalize"]
    with pytest.raises(ValueError, match="build_worker_job"):
        build_step_job(OWNER, spec_with(), CONFIG, Role.SHARDS)


def test_long_names_fit_in_63_characters_and_stay_distinct() -> None:
    long_a, long_b = "a" * 253, "a" * 252 + "b"
    names = {job_name(n, "0f1e2d3c-uid", Role.SHARDS, 3) for n in (long_a, long_b)}
    assert len(names) == 2
    # An Indexed Job's pods are named <job>-<index> (a DNS label): room for 5 digits.
    assert all(len(f"{n}-99999") <= MAX_LABEL and n.endswith("-0f1e2d3c-r3") for n in names)
    assert all(len(n) == MAX_JOB_NAME for n in names)
    labels = child_labels(long_a, "uid", Role.PLAN)
    assert all(len(v) <= MAX_LABEL for v in labels.values())
    reports = {report_name(n, "0f1e2d3c-uid", 12, 99_999) for n in (long_a, long_b)}
    assert len(reports) == 2
    assert all(len(n) <= MAX_OBJECT_NAME for n in reports)


def test_job_names_of_two_runs_never_collide() -> None:
    """`a`'s finalize after a manual retry and round 1 of a run named `a-finalize` once had the
    same name; the run's UID in every name keeps them apart."""
    a = job_name("a", "11111111-x", Role.FINALIZE, 1)
    other = job_name("a-finalize", "22222222-y", Role.SHARDS, 1)
    assert a != other
    runs = (("a", "11111111"), ("a-finalize", "22222222"), ("a-11111111", "33333333"))
    names = [{job_name(n, uid, role, r) for role in Role for r in range(3)} for n, uid in runs]
    assert all(not names[i] & names[j] for i in range(3) for j in range(i + 1, 3))


def test_triton_tls_and_header_secrets_are_mounted_where_the_worker_reads_them() -> None:
    triton = {
        "url": "https://triton:8000",
        "tls": {"secretName": "triton-ca"},
        "headersSecret": "token",
    }
    job = build_worker_job(OWNER, spec_with(triton=triton), CONFIG, shards=1, round_=0)
    pod = job["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"triton-tls": "triton-ca", "triton-headers": "token"}
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    assert mounts["triton-tls"]["mountPath"] == "/var/run/batchpredict/tls"
    assert mounts["triton-headers"]["mountPath"] == "/var/run/batchpredict/headers"
    assert mounts["triton-tls"]["readOnly"] is True
    plain = build_worker_job(OWNER, spec_with(), CONFIG, shards=1, round_=0)
    assert [v["name"] for v in plain["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
