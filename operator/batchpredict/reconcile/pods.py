"""The worker pod template: a pure function of the spec, the step and the operator config."""

from __future__ import annotations

import json
import math
from typing import Any

from batchpredict.api.v1alpha1.serving import SIDECAR_TMP, TritonSidecar
from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.controller.config import OperatorConfig
from batchpredict.incluster import TRITON_HEADERS_DIR, TRITON_TLS_DIR
from batchpredict.reconcile.naming import Role
from batchpredict.reconcile.pools import node_pool

WORKER_CONTAINER = "worker"
TRITON_CONTAINER = "triton"
TRITON_TMP_VOLUME = "triton-tmp"

# Pod Security Standard "restricted": non-root, no privilege escalation, no capabilities,
# RuntimeDefault seccomp. The root filesystem is read-only; /tmp is an emptyDir.
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def worker_env(
    spec: BatchPredictionSpec,
    config: OperatorConfig,
    *,
    name: str,
    namespace: str,
    run_uid: str,
    round_: int,
) -> list[dict[str, Any]]:
    """The worker contract's environment (see batchpredict.worker.main)."""
    env: list[dict[str, Any]] = [
        {"name": "BATCHPREDICT_SPEC", "value": json.dumps(spec.to_wire(), separators=(",", ":"))},
        {"name": "BATCHPREDICT_NAME", "value": name},
        {"name": "BATCHPREDICT_NAMESPACE", "value": namespace},
        {"name": "BATCHPREDICT_RUN_UID", "value": run_uid},
        {"name": "BATCHPREDICT_ROUND", "value": str(round_)},
        {"name": "BATCHPREDICT_REPORT", "value": "api"},
    ]
    triton_url = triton_url_for(spec, config)
    if triton_url is not None:
        env.append({"name": "BATCHPREDICT_TRITON_URL", "value": triton_url})
    env += [e.to_wire() for e in spec.worker.env or []]
    return env


def triton_url_for(spec: BatchPredictionSpec, config: OperatorConfig) -> str | None:
    """The server workers talk to: the sidecar on localhost, the spec's, or the default."""
    if spec.triton is None:
        return config.default_triton_url
    if spec.triton.sidecar is not None:
        return f"localhost:{spec.triton.sidecar.grpc_port}"
    return None  # the worker reads spec.triton.url itself


def scheduling(spec: BatchPredictionSpec, config: OperatorConfig) -> dict[str, Any]:
    """nodeSelector, tolerations and affinity: the node pool's, then the spec's on top."""
    worker = spec.worker
    pool = node_pool(spec, config)
    node_selector = dict(pool.node_selector) if pool else {}
    node_selector.update(worker.node_selector or {})
    tolerations = list(pool.tolerations) if pool else []
    tolerations += [t.to_wire() for t in worker.tolerations or []]
    affinity = worker.affinity if worker.affinity is not None else (pool.affinity if pool else None)
    out: dict[str, Any] = {}
    if node_selector:
        out["nodeSelector"] = node_selector
    if tolerations:
        out["tolerations"] = tolerations
    if affinity:
        out["affinity"] = affinity
    return out


def worker_resources(spec: BatchPredictionSpec, config: OperatorConfig) -> dict[str, Any]:
    """The spec's resources, else the node pool's (where GPU requests usually come from). With
    a Triton sidecar the pool's resources are the sidecar's: Triton is what uses the GPU."""
    if spec.worker.resources is not None:
        return spec.worker.resources.to_wire()
    pool = node_pool(spec, config)
    if pool is not None and pool.resources and sidecar_of(spec) is None:
        return dict(pool.resources)
    return {}


def sidecar_of(spec: BatchPredictionSpec) -> TritonSidecar | None:
    return spec.triton.sidecar if spec.triton is not None else None


def sidecar_resources(spec: BatchPredictionSpec, config: OperatorConfig) -> dict[str, Any]:
    """The sidecar's own resources, else the node pool's (its GPU)."""
    sidecar = sidecar_of(spec)
    if sidecar is not None and sidecar.resources:
        return dict(sidecar.resources)
    pool = node_pool(spec, config)
    return dict(pool.resources) if pool is not None and pool.resources else {}


def triton_sidecar(spec: BatchPredictionSpec, config: OperatorConfig) -> dict[str, Any]:
    """Triton as a native sidecar: an init container with restartPolicy Always, so it starts
    (and its startup probe passes: the models are loaded) before the worker, keeps running
    beside it and is stopped when the worker ends. Non-root with a read-only root; what Triton
    writes (object-store downloads, caches) goes to its own emptyDir at /tmp."""
    sidecar = sidecar_of(spec)
    if sidecar is None:
        raise ValueError("triton_sidecar() needs spec.triton.sidecar")
    period = 2
    mounts: list[dict[str, Any]] = [{"name": TRITON_TMP_VOLUME, "mountPath": SIDECAR_TMP}]
    if sidecar.model_volume is not None:
        mounts.append(
            {
                "name": sidecar.model_volume,
                "mountPath": sidecar.model_repository,
                "readOnly": True,
            }
        )
    mounts += sidecar.volume_mounts or []
    # The pod's credentials for an object-store repository (AWS_*, GOOGLE_APPLICATION_...):
    # the run's own env, not the worker's contract.
    env = [e.to_wire() for e in spec.worker.env or [] if not e.name.startswith("BATCHPREDICT_")]
    container: dict[str, Any] = {
        "name": TRITON_CONTAINER,
        "image": sidecar.image,
        "restartPolicy": "Always",
        "command": ["tritonserver"],
        "args": [
            f"--model-repository={sidecar.model_repository}",
            f"--http-port={sidecar.http_port}",
            f"--grpc-port={sidecar.grpc_port}",
            f"--metrics-port={sidecar.metrics_port}",
            *sidecar.args,
        ],
        "env": [{"name": "HOME", "value": SIDECAR_TMP}, *env],
        "ports": [
            {"name": "http", "containerPort": sidecar.http_port},
            {"name": "grpc", "containerPort": sidecar.grpc_port},
            {"name": "metrics", "containerPort": sidecar.metrics_port},
        ],
        # The worker container starts only after this probe passes: the models are loaded.
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": sidecar.http_port},
            "periodSeconds": period,
            "failureThreshold": math.ceil(sidecar.startup_timeout_seconds / period),
        },
        "securityContext": {
            **CONTAINER_SECURITY_CONTEXT,
            "runAsUser": sidecar.run_as_user,
        },
        "volumeMounts": mounts,
    }
    resources = sidecar_resources(spec, config)
    if resources:
        container["resources"] = resources
    return container


def triton_secret_mounts(
    spec: BatchPredictionSpec,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) for the TLS and header Secrets of spec.triton, where the worker reads
    them (batchpredict.incluster). Secrets stay in files: never in env, never logged."""
    triton = spec.triton
    wanted: list[tuple[str, str, str]] = []
    if triton is not None and triton.tls is not None and triton.tls.secret_name:
        wanted.append(("triton-tls", triton.tls.secret_name, TRITON_TLS_DIR))
    if triton is not None and triton.headers_secret:
        wanted.append(("triton-headers", triton.headers_secret, TRITON_HEADERS_DIR))
    volumes = [{"name": name, "secret": {"secretName": secret}} for name, secret, _ in wanted]
    mounts = [{"name": name, "mountPath": path, "readOnly": True} for name, _, path in wanted]
    return volumes, mounts


def build_pod_template(
    spec: BatchPredictionSpec,
    config: OperatorConfig,
    *,
    role: Role,
    labels: dict[str, str],
    env: list[dict[str, Any]],
) -> dict[str, Any]:
    """The pod template of a plan, shard or finalize Job."""
    # Only the steps that call Triton (plan checks the model, shards score) get its Secrets.
    needs_server = role in {Role.PLAN, Role.SHARDS}
    secret_volumes, secret_mounts = triton_secret_mounts(spec) if needs_server else ([], [])
    worker: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": spec.worker.image or config.worker_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": [*config.worker_command, role_command(role)],
        "env": env,
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 (an emptyDir)
            *secret_mounts,
            *(spec.worker.volume_mounts or []),
        ],
    }
    if role is Role.SHARDS:
        resources = worker_resources(spec, config)
        if resources:
            worker["resources"] = resources
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": spec.worker.service_account_name or config.worker_service_account,
        "securityContext": POD_SECURITY_CONTEXT,
        "containers": [worker],
        "volumes": [
            {"name": "tmp", "emptyDir": {}},
            *secret_volumes,
            *(spec.worker.volumes or []),
        ],
        **scheduling(spec, config),
    }
    if spec.worker.priority_class_name:
        pod["priorityClassName"] = spec.worker.priority_class_name
    if needs_server and sidecar_of(spec) is not None:
        pod["initContainers"] = [triton_sidecar(spec, config)]
        pod["volumes"].append({"name": TRITON_TMP_VOLUME, "emptyDir": {}})
    return {"metadata": {"labels": labels}, "spec": pod}


def role_command(role: Role) -> str:
    """The worker sub-command of a step."""
    commands = {
        Role.PLAN: "plan",
        Role.SHARDS: "shard",
        Role.FINALIZE: "finalize",
        Role.EVALUATE: "evaluate",
    }
    return commands[role]
