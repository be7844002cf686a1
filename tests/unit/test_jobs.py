"""Job and pod builders: plain data a user would see with `kubectl get job -o yaml`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchpredict.api.v1alpha1.report import report_name
from batchpredict.api.validation import InvalidSpecError, parse_spec
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


SIDECAR: dict[str, Any] = {
    "image": "nvcr.io/nvidia/tritonserver:25.10-py3",
    "modelRepository": "/models",
    "modelVolume": "models",
}
MODEL_VOLUMES = [{"name": "models", "persistentVolumeClaim": {"claimName": "triton-models"}}]


def test_triton_sidecar_is_a_native_sidecar_that_runs_on_a_restricted_node() -> None:
    worker = {
        "nodePool": "gpu",
        "volumes": MODEL_VOLUMES,
        "env": [
            {"name": "AWS_REGION", "value": "eu-west-1"},
            {"name": "BATCHPREDICT_CHUNK_ITEMS", "value": "40"},
        ],
    }
    spec = spec_with(triton={"sidecar": SIDECAR}, worker=worker)
    job = build_worker_job(OWNER, spec, CONFIG, shards=1, round_=0)
    pod = job["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    # Native sidecar: starts first, the worker waits for its startup probe, ends with it.
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"] == {
        "httpGet": {"path": "/v2/health/ready", "port": 8000},
        "periodSeconds": 2,
        "failureThreshold": 300,
    }
    assert sidecar["command"] == ["tritonserver"]
    assert sidecar["args"] == [
        "--model-repository=/models",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
    ]
    # The model repository from the named volume, read-only; what Triton writes in an emptyDir.
    assert sidecar["volumeMounts"] == [
        {"name": "triton-tmp", "mountPath": "/tmp"},
        {"name": "models", "mountPath": "/models", "readOnly": True},
    ]
    assert {"name": "triton-tmp", "emptyDir": {}} in pod["volumes"]
    assert MODEL_VOLUMES[0] in pod["volumes"]
    models_in_worker = [m for m in container(job)["volumeMounts"] if m["name"] == "models"]
    assert models_in_worker == [], "only Triton mounts the model repository"
    # A documented user, a read-only root, no privileges (Pod Security restricted).
    assert sidecar["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "capabilities": {"drop": ["ALL"]},
    }
    # The pool's GPU goes to Triton, which uses it; the worker requests none.
    assert sidecar["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert "resources" not in container(job)
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    # The pod's credentials reach Triton (object stores); the worker's contract does not.
    assert sidecar["env"] == [
        {"name": "HOME", "value": "/tmp"},
        {"name": "AWS_REGION", "value": "eu-west-1"},
    ]
    assert env(job)["BATCHPREDICT_TRITON_URL"] == "localhost:8001"


def test_triton_sidecar_ports_resources_and_object_store_repository() -> None:
    sidecar = {
        "image": "nvcr.io/nvidia/tritonserver:25.10-py3",
        "modelRepository": "s3://models/prod",
        "httpPort": 18000,
        "grpcPort": 18001,
        "metricsPort": 18002,
        "runAsUser": 4242,
        "startupTimeoutSeconds": 61,
        "args": ["--log-verbose=1"],
        "resources": {"limits": {"nvidia.com/gpu": 2}},
        "volumeMounts": [{"name": "gcs-key", "mountPath": "/var/secrets/gcs", "readOnly": True}],
    }
    worker = {"nodePool": "gpu", "volumes": [{"name": "gcs-key", "secret": {"secretName": "k"}}]}
    spec = spec_with(triton={"sidecar": sidecar}, worker=worker)
    job = build_worker_job(OWNER, spec, CONFIG, shards=1, round_=0)
    (triton,) = job["spec"]["template"]["spec"]["initContainers"]
    assert triton["args"] == [
        "--model-repository=s3://models/prod",
        "--http-port=18000",
        "--grpc-port=18001",
        "--metrics-port=18002",
        "--log-verbose=1",
    ]
    assert triton["startupProbe"]["httpGet"]["port"] == 18000
    assert triton["startupProbe"]["failureThreshold"] == 31  # 61 s at 2 s a probe
    assert triton["securityContext"]["runAsUser"] == 4242
    assert triton["resources"] == {"limits": {"nvidia.com/gpu": 2}}
    assert triton["volumeMounts"][1:] == sidecar["volumeMounts"]
    assert env(job)["BATCHPREDICT_TRITON_URL"] == "localhost:18001"
    plan = build_step_job(OWNER, spec, CONFIG, Role.PLAN)
    assert plan["spec"]["template"]["spec"]["initContainers"][0]["name"] == "triton"
    finalize = build_step_job(OWNER, spec, CONFIG, Role.FINALIZE)
    assert "initContainers" not in finalize["spec"]["template"]["spec"], "finalize needs no Triton"


@pytest.mark.parametrize(
    ("sidecar", "worker", "expected"),
    [
        (
            {"modelRepository": "/models"},
            {},
            "spec.triton.sidecar: triton.sidecar.modelVolume names the volume (of worker.volumes) "
            "that holds modelRepository when it is a path",
        ),
        (
            {"modelRepository": "s3://b/models", "modelVolume": "models"},
            {"volumes": MODEL_VOLUMES},
            "leave it out for an s3://, gs:// or as:// URI",
        ),
        (
            {"modelRepository": "models", "modelVolume": "models"},
            {"volumes": MODEL_VOLUMES},
            "spec.triton.sidecar.modelRepository: String should match pattern",
        ),
        (
            {"modelRepository": "/models", "modelVolume": "modles"},
            {"volumes": MODEL_VOLUMES},
            "spec: triton.sidecar.modelVolume: no volume named 'modles' in worker.volumes "
            "(volumes: models); add it there",
        ),
        (
            {"modelRepository": "/models", "modelVolume": "models"},
            {},
            "spec: triton.sidecar.modelVolume: no volume named 'models' in worker.volumes "
            "(volumes: none)",
        ),
        (
            {"modelRepository": "/tmp", "modelVolume": "models"},
            {"volumes": MODEL_VOLUMES},
            "triton.sidecar.modelRepository: /tmp is not a place for the model volume",
        ),
        (
            {"modelRepository": "gs://b/m", "grpcPort": 8000},
            {},
            "spec.triton.sidecar: triton.sidecar.httpPort, grpcPort and metricsPort must differ",
        ),
        (
            {"modelRepository": "gs://b/m", "args": ["--grpc-port=9"]},
            {},
            "triton.sidecar.args: --grpc-port is set from the sidecar's fields",
        ),
        (
            {"modelRepository": "gs://b/m", "runAsUser": 0},
            {},
            "spec.triton.sidecar.runAsUser: Input should be greater than or equal to 1",
        ),
        (
            {"modelRepository": "gs://b/m", "volumeMounts": [{"name": "key", "mountPath": "/k"}]},
            {},
            "spec: triton.sidecar.volumeMounts[0].name: no volume named 'key' in worker.volumes",
        ),
    ],
)
def test_sidecar_mistakes_name_the_field(
    sidecar: dict[str, Any], worker: dict[str, Any], expected: str
) -> None:
    triton = {"sidecar": {"image": "nvcr.io/nvidia/tritonserver:25.10-py3", **sidecar}}
    with pytest.raises(InvalidSpecError) as caught:
        spec_with(triton=triton, worker=worker)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


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
