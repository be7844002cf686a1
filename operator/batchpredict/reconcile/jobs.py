"""Job builders: plain dicts, no I/O. The handler creates what these return."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.controller.config import OperatorConfig
from batchpredict.reconcile.naming import (
    ANNOTATION_FAILED_BEFORE,
    ANNOTATION_KEPT_BEFORE,
    ANNOTATION_RETRY_REQUEST,
    ANNOTATION_SUCCEEDED_BEFORE,
    LABEL_EVALUATION,
    LABEL_REDO,
    Role,
    child_labels,
    job_name,
)
from batchpredict.reconcile.pods import WORKER_CONTAINER, build_pod_template, worker_env
from batchpredict.worker import exit_codes

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# A plan or finalize pod that crashes is retried this often before the run fails.
STEP_BACKOFF_LIMIT = 2


@dataclass(frozen=True)
class Owner:
    """The BatchPrediction a Job belongs to (owner reference: deleting it deletes the Job)."""

    name: str
    namespace: str
    uid: str
    api_version: str = "batchpredict.io/v1alpha1"
    kind: str = "BatchPrediction"

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class ManualRetry:
    """What a manual retry round's Job records about the request it answers."""

    request: str  # a hash of the batchpredict.io/retry annotation's value
    succeeded_before: int
    failed_before: int  # the final failures the round redoes
    codes: tuple[str, ...] = ()  # only these codes (and NOT_PROCESSED); empty: every code
    kept_before: dict[str, int] = field(default_factory=dict)  # final failures left as they are

    def annotations(self) -> dict[str, str]:
        annotations = {
            ANNOTATION_RETRY_REQUEST: self.request,
            ANNOTATION_SUCCEEDED_BEFORE: str(self.succeeded_before),
            ANNOTATION_FAILED_BEFORE: str(self.failed_before),
        }
        if self.kept_before:
            annotations[ANNOTATION_KEPT_BEFORE] = json.dumps(self.kept_before, sort_keys=True)
        return annotations


def _exit_rule(action: str, code: int) -> dict[str, Any]:
    return {
        "action": action,
        "onExitCodes": {"containerName": WORKER_CONTAINER, "operator": "In", "values": [code]},
    }


def pod_failure_policy(role: Role) -> dict[str, Any]:
    """Map the worker's exit codes: cannot start fails the Job at once; a disruption
    (eviction, preemption) is not the pod's fault and does not count; a broken shard is retried
    up to the per-index limit (the worker resumes where it stopped); a shard that waited for
    Triton in vain fails its index only (a plan step that did fails the run)."""
    gave_up = "FailIndex" if role is Role.SHARDS else "FailJob"
    rules: list[dict[str, Any]] = [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        _exit_rule("FailJob", exit_codes.CANNOT_START),
        _exit_rule(gave_up, exit_codes.UNAVAILABLE),
    ]
    return {"rules": rules}


def _job(
    owner: Owner,
    *,
    role: Role,
    round_: int,
    spec: BatchPredictionSpec,
    config: OperatorConfig,
    job_spec: dict[str, Any],
    retry: ManualRetry | None = None,
    evaluation_key: str = "",
) -> dict[str, Any]:
    labels = child_labels(owner.name, owner.uid, role, round_)
    if evaluation_key:
        labels[LABEL_EVALUATION] = evaluation_key
    env = worker_env(
        spec, config, name=owner.name, namespace=owner.namespace, run_uid=owner.uid, round_=round_
    )
    if retry is not None:
        labels[LABEL_REDO] = "all"
        env.append({"name": "BATCHPREDICT_REDO", "value": "all"})
        if retry.codes:
            env.append({"name": "BATCHPREDICT_REDO_CODES", "value": ",".join(retry.codes)})
    template = build_pod_template(spec, config, role=role, labels=labels, env=env)
    job_labels = dict(labels)
    if spec.queue_name and role is Role.SHARDS:
        job_labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    metadata: dict[str, Any] = {
        "name": job_name(owner.name, owner.uid, role, round_, evaluation_key),
        "namespace": owner.namespace,
        "labels": job_labels,
        "ownerReferences": [owner.reference()],
    }
    if retry is not None:
        metadata["annotations"] = retry.annotations()
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {**job_spec, "podFailurePolicy": pod_failure_policy(role), "template": template},
    }


def build_step_job(
    owner: Owner, spec: BatchPredictionSpec, config: OperatorConfig, role: Role, round_: int = 0
) -> dict[str, Any]:
    """The one-pod plan or finalize Job (finalize runs again after a manual retry round), or
    the evaluate Job of the current spec.evaluation (re-validation of a finished run)."""
    if role is Role.SHARDS:
        raise ValueError("shard Jobs are built by build_worker_job")
    key = ""
    if role is Role.EVALUATE:
        if spec.evaluation is None:
            raise ValueError("an evaluate Job needs spec.evaluation")
        key = spec.evaluation.key()
    job_spec = {"completions": 1, "backoffLimit": STEP_BACKOFF_LIMIT}
    return _job(
        owner,
        role=role,
        round_=round_,
        spec=spec,
        config=config,
        job_spec=job_spec,
        evaluation_key=key,
    )


def build_worker_job(
    owner: Owner,
    spec: BatchPredictionSpec,
    config: OperatorConfig,
    *,
    shards: int,
    round_: int,
    suspend: bool = False,
    retry: ManualRetry | None = None,
) -> dict[str, Any]:
    """The Indexed Job of one round: one completion index per shard. Round 0 scores the plan;
    a later round redoes the previous round's retryable failures; a manual `retry` round
    redoes every final failure of every earlier round."""
    if shards < 1:
        raise ValueError(f"a worker Job needs at least one shard, got {shards}")
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": shards,
        "parallelism": min(spec.parallelism, shards),
        "backoffLimitPerIndex": spec.retry.shard_backoff_limit,
        # Kueue admits a queued Job by unsuspending it.
        "suspend": suspend or spec.suspend or spec.queue_name is not None,
    }
    return _job(
        owner,
        role=Role.SHARDS,
        round_=round_,
        spec=spec,
        config=config,
        job_spec=job_spec,
        retry=retry,
    )
