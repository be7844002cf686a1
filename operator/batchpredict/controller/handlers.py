"""kopf handlers: read the indexes, call `reconcile_run`, perform what it decided.

One timer per BatchPrediction reconciles every `statusIntervalSeconds` from in-memory indexes
of its Jobs, step pods and shard reports (watches, no polling of the API), and writes status
only when it changed: at most one status patch per run per interval.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from prometheus_client import start_http_server

from batchpredict import metrics
from batchpredict.api.v1alpha1 import GROUP, PLURAL, VERSION, BatchPrediction
from batchpredict.api.v1alpha1.report import REPORT_PLURAL, BatchPredictionShard
from batchpredict.api.v1alpha1.status import BatchPredictionStatus, Phase
from batchpredict.api.validation import InvalidSpecError, parse_batch_prediction
from batchpredict.controller import kube
from batchpredict.controller.config import OperatorConfig, load_config
from batchpredict.reconcile.naming import (
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_RUN,
    MANAGED_BY,
    Role,
)
from batchpredict.reconcile.observed import JobState, Observed, StepOutcome
from batchpredict.reconcile.patching import merge_patch
from batchpredict.reconcile.pods import WORKER_CONTAINER
from batchpredict.reconcile.run import Decision, reconcile_run

RunKey = tuple[str, str]  # (namespace, BatchPrediction uid)
MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = load_config()
    memo.config = config
    memo.api = await kube.api_client()
    memo.tracker = metrics.PhaseTracker()
    # Keep kopf's bookkeeping out of status: status is ours, computed from the children.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.WARNING  # we post our own Events on transitions
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.batching.worker_limit = 64
    if config.metrics_port:
        start_http_server(config.metrics_port)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.api.close()


# -- indexes: what the timer reads instead of calling the API ---------------------------------


def _is_step_pod(labels: kopf.Labels, **_: Any) -> bool:
    return labels.get(LABEL_ROLE) in {Role.PLAN.value, Role.FINALIZE.value}


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
def jobs_by_run(*, body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> Any:
    return {(namespace, labels.get(LABEL_RUN, "")): JobState.from_job(body)}


@kopf.index("", "v1", "pods", labels=MANAGED, when=_is_step_pod)
def step_pods_by_run(
    *, body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> Any:
    outcome = StepOutcome.from_pod(body, WORKER_CONTAINER)
    return {(namespace, labels.get(LABEL_RUN, "")): (labels.get(LABEL_ROLE), outcome)}


@kopf.index(GROUP, VERSION, REPORT_PLURAL)
def reports_by_run(*, body: kopf.Body, namespace: str | None, **_: Any) -> Any:
    report = BatchPredictionShard.model_validate(dict(body))
    return {(namespace, report.spec.run_uid): report}


INDEXES = ("jobs_by_run", "step_pods_by_run", "reports_by_run")


def observe(key: RunKey, indexes: dict[str, kopf.Index[RunKey, Any]]) -> Observed:
    """The run's children from the indexes."""
    steps: dict[str, StepOutcome] = {}
    for role, outcome in indexes["step_pods_by_run"].get(key, []):
        # A retried step has several pods: a success wins, else any finished one.
        if outcome is not None and (role not in steps or outcome.succeeded):
            steps[role] = outcome
    return Observed(
        now=datetime.now(UTC),
        jobs=tuple(indexes["jobs_by_run"].get(key, [])),
        reports=tuple(indexes["reports_by_run"].get(key, [])),
        plan=steps.get(Role.PLAN.value),
        finalize=steps.get(Role.FINALIZE.value),
    )


# -- the reconcile timer ----------------------------------------------------------------------


def _interval() -> float:
    return load_config().status_interval_seconds


@kopf.timer(GROUP, VERSION, PLURAL, interval=_interval())
async def reconcile(
    *,
    body: kopf.Body,
    namespace: str | None,
    uid: str,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    started = time.perf_counter()
    config: OperatorConfig = memo.config
    old_status = dict(body.get("status") or {})
    try:
        bp = parse_batch_prediction(dict(body))
    except InvalidSpecError as error:
        _reject(body, old_status, error, patch)
        return
    indexes = {name: kwargs[name] for name in INDEXES}  # kopf passes indexes by name
    decision = reconcile_run(bp, observe((namespace or "", uid), indexes), config)
    await _perform(bp, decision, memo, logger)
    new_status = decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    changes = merge_patch(old_status, new_status)
    if changes:
        patch.status.update(changes)
        metrics.STATUS_PATCHES.inc()
    for event in decision.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        metrics.EVENTS.labels(reason=event.reason).inc()
    items = decision.status.items
    memo.tracker.observe(
        uid,
        decision.status.phase,
        items.succeeded if items else 0,
        items.failed if items else 0,
    )
    metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)


async def _perform(bp: BatchPrediction, decision: Decision, memo: kopf.Memo, log: Any) -> None:
    config: OperatorConfig = memo.config
    if not decision.create:
        return
    namespace = bp.metadata["namespace"]
    account = bp.spec.worker.service_account_name or config.worker_service_account
    await kube.ensure_worker_access(
        memo.api,
        namespace,
        account,
        config.worker_cluster_role,
        create_service_account=bp.spec.worker.service_account_name is None,
    )
    for job in decision.create:
        role = job["metadata"]["labels"][LABEL_ROLE]
        if await kube.create_job(memo.api, job):
            metrics.JOBS_CREATED.labels(role=role).inc()
            log.info("created Job %s", job["metadata"]["name"])


def _reject(
    body: kopf.Body, old_status: dict[str, Any], error: InvalidSpecError, patch: kopf.Patch
) -> None:
    """A spec the API server let through but that cannot run: Failed, with what to fix."""
    if old_status.get("phase") == Phase.FAILED.value:
        return
    message = str(error)
    status = BatchPredictionStatus(phase=Phase.FAILED, message=message)
    patch.status.update(status.model_dump(mode="json", by_alias=True, exclude_none=True))
    kopf.event(body, type="Warning", reason="InvalidSpec", message=message)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget(uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Jobs and pods go with their owner (garbage collection); outputs stay in storage."""
    memo.tracker.forget(uid)
