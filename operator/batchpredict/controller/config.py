"""Operator configuration: what the platform team sets in Helm values (a mounted YAML file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from batchpredict.incluster import in_pod

CONFIG_ENV = "BATCHPREDICT_CONFIG"


class _Config(BaseModel):
    model_config = ConfigDict(
        frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid"
    )


class NodePool(_Config):
    """A named place to run workers, picked by `spec.worker.nodePool`."""

    description: str | None = Field(
        default=None, description="What the pool is, for users listing the pools."
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    resources: dict[str, Any] | None = Field(
        default=None, description="Worker resources, e.g. limits: {nvidia.com/gpu: 1}."
    )


class TenancyPolicy(_Config):
    """What a BatchPrediction may ask for, beyond its author's own rights (which admission
    checks): the platform team's limits, enforced by the operator before it creates anything."""

    allowed_images: list[str] = Field(
        default_factory=lambda: [
            "nvcr.io/nvidia/tritonserver:",
            "nvcr.io/nvidia/tritonserver@sha256:",
        ],
        description="Image prefixes spec.worker.image and spec.triton.sidecar.image may start "
        "with (`registry/repo:` for tags, `registry/repo@sha256:` for digests); the operator's "
        "worker image is always allowed.",
    )
    require_image_digest: bool = Field(
        default=False, description="Images a run names must be pinned by digest (@sha256:)."
    )
    allowed_volume_types: list[str] = Field(
        default_factory=lambda: [
            "persistentVolumeClaim",
            "configMap",
            "secret",
            "emptyDir",
            "projected",
            "downwardAPI",
            "csi",
            "ephemeral",
        ],
        description="Volume sources spec.worker.volumes may use (no hostPath unless listed).",
    )
    allowed_service_accounts: list[str] | None = Field(
        default_factory=list,
        description="ServiceAccounts spec.worker.serviceAccountName may name, besides the "
        "operator's worker account; null allows any the author may impersonate.",
    )
    allowed_priority_classes: list[str] | None = Field(
        default_factory=list,
        description="PriorityClasses spec.worker.priorityClassName may name (a high one preempts "
        "other teams' pods); null allows any.",
    )
    allowed_preprocess_modules: list[str] = Field(
        default_factory=list,
        description="Modules (and their submodules) spec.input.preprocess.function may come "
        "from; empty allows no function.",
    )


class OperatorConfig(_Config):
    worker_image: str = Field(
        default="ghcr.io/batchpredict/batchpredict:0.1.0",
        description="Image of worker pods when a BatchPrediction names none.",
    )
    worker_command: list[str] = Field(
        default_factory=lambda: ["batchpredict-worker"],
        description="Entry point of the worker inside its image.",
    )
    image_pull_policy: str = "IfNotPresent"
    worker_service_account: str = Field(
        default="batchpredict-worker",
        description="ServiceAccount the operator creates and binds in a run's namespace when the "
        "run names none.",
    )
    worker_cluster_role: str = Field(
        default="batchpredict-worker",
        description="ClusterRole (from the chart) bound to worker ServiceAccounts: it allows "
        "writing BatchPredictionShard reports and nothing else.",
    )
    default_triton_url: str | None = Field(
        default=None, description="Triton server for runs that set no spec.triton."
    )
    node_pools: dict[str, NodePool] = Field(
        default_factory=dict,
        description="The node pools spec.worker.nodePool may name; any other name fails the run "
        "(reason UnknownNodePool) with this list.",
    )
    node_pools_config_map: str | None = Field(
        default=None,
        description="`namespace/name` of the ConfigMap (rendered by the chart) that lists the "
        "node pools for users: named in the UnknownNodePool message, read by "
        "`batchpredict node-pools`.",
    )
    max_running: int | None = Field(
        default=None, ge=1, description="Cap on concurrently running BatchPredictions."
    )
    kueue: bool = Field(
        default=False,
        description="Kueue runs in the cluster: watch its Workloads (kueue.x-k8s.io) to suspend "
        "and resume queued runs through them and to show their queue position.",
    )
    status_interval_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Reconcile (and at most one status patch) per run this often.",
    )
    failed_items_limit: int = Field(
        default=20, ge=0, description="How many failed items status.failedItems lists."
    )
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    policy: TenancyPolicy = Field(default_factory=TenancyPolicy)
    started_by_verified: bool = Field(
        default=False,
        description="The chart's admission policy guarantees the batchpredict.io/started-by "
        "annotation (set from the requesting user on create, never changed); without it the "
        "operator marks status.startedBy as unverified.",
    )


def load_config(path: str | None = None) -> OperatorConfig:
    """Read the YAML file named by `path` or $BATCHPREDICT_CONFIG (a path in the pod, where the
    chart mounts its ConfigMap); defaults without one."""
    source = path or os.environ.get(CONFIG_ENV)
    if not source:
        return OperatorConfig()
    file = Path(source) if Path(source).exists() else in_pod(source)
    data = yaml.safe_load(file.read_text()) or {}
    return OperatorConfig.model_validate(data)
