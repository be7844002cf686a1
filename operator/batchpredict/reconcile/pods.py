"""The worker pod template: a pure function of the spec, the step and the operator config."""

from __future__ import annotations

import json
from typing import Any

from batchpredict.api.v1alpha1.serving import TritonSidecar
from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.controller.config import OperatorConfig
from batchpredict.incluster import TRITON_HEADERS_DIR, TRITON_TLS_DIR
from batchpredict.reconcile.naming import Role

WORKER_CONTAINER = "worker"
TRITON_CONTAINER = "triton"
TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001

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
        return f"localhost:{TRITON_GRPC_PORT}"
    return None  # the worker reads spec.triton.url itself


def scheduling(spec: BatchPredictionSpec, config: OperatorConfig) -> dict[str, Any]:
    """nodeSelector, tolerations and affinity: the node pool's, then the spec's on top."""
    worker = spec.worker
    pool = config.node_pools.get(worker.node_pool) if worker.node_pool else None
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
    """The spec's resources, else the node pool's (where GPU requests usually come from)."""
    if spec.worker.resources is not None:
        return spec.worker.resources.to_wire()
    pool = config.node_pools.get(spec.worker.node_pool) if spec.worker.node_pool else None
    if pool is not None and pool.resources:
        return dict(pool.resources)
    return {}


def triton_sidecar(sidecar: TritonSidecar) -> dict[str, Any]:
    """Triton as a native sidecar: an init container that keeps running beside the worker."""
    container: dict[str, Any] = {
        "name": TRITON_CONTAINER,
        "image": sidecar.image,
        "restartPolicy": "Always",
        "command": ["tritonserver"],
        "args": [
            f"--model-repository={sidecar.model_repository}",
            f"--http-port={TRITON_HTTP_PORT}",
            f"--grpc-port={TRITON_GRPC_PORT}",
            *sidecar.args,
        ],
        "ports": [
            {"name": "http", "containerPort": TRITON_HTTP_PORT},
            {"name": "grpc", "containerPort": TRITON_GRPC_PORT},
        ],
        # The worker container starts only after this probe passes: the model is loaded.
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": TRITON_HTTP_PORT},
            "periodSeconds": 2,
            "failureThreshold": 300,
        },
        "securityContext": {**CONTAINER_SECURITY_CONTEXT, "readOnlyRootFilesystem": False},
    }
    if sidecar.resources:
        container["resources"] = sidecar.resources
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
    if needs_server and spec.triton is not None and spec.triton.sidecar is not None:
        pod["initContainers"] = [triton_sidecar(spec.triton.sidecar)]
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
