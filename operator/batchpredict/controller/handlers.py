"""kopf handlers: read the indexes, call `reconcile_run`, perform what it decided.

One timer per BatchPrediction reconciles every `statusIntervalSeconds` from in-memory indexes
of its Jobs, step pods and shard reports (watches, no polling of the API), and writes status
only when it changed: at most one status patch per run per interval.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from prometheus_client import start_http_server

from batchpredict import metrics
from batchpredict.api.v1alpha1 import GROUP, PLURAL, VERSION, BatchPrediction
from batchpredict.api.v1alpha1.report import REPORT_PLURAL, BatchPredictionShard
from batchpredict.api.v1alpha1.status import (
    BatchPredictionStatus,
    ConditionStatus,
    ConditionType,
    Phase,
)
from batchpredict.api.validation import InvalidSpecError, parse_batch_prediction
from batchpredict.controller import kube
from batchpredict.controller.config import OperatorConfig, load_config
from batchpredict.incluster import (
    api_client,
    api_server_url,
    in_cluster,
    listen_address,
    service_account_ca,
    service_account_token,
)
from batchpredict.reconcile.conditions import set_condition
from batchpredict.reconcile.decision import Decision
from batchpredict.reconcile.evaluation import refuse_revalidation
from batchpredict.reconcile.kueue import (
    KUEUE_GROUP,
    KUEUE_VERSION,
    WORKLOAD_PLURAL,
    WorkloadState,
)
from batchpredict.reconcile.naming import LABEL_MANAGED_BY, LABEL_ROLE, LABEL_RUN, MANAGED_BY
from batchpredict.reconcile.observed import (
    JobState,
    Observed,
    PodResult,
    controller_uid,
    observe_run,
    owner_uid,
)
from batchpredict.reconcile.patching import merge_patch
from batchpredict.reconcile.pods import WORKER_CONTAINER
from batchpredict.reconcile.policy import SlotClaim, admitted_runs, slot_claim
from batchpredict.reconcile.run import reconcile_run
from batchpredict.reconcile.tenancy import policy_violations

RunKey = tuple[str, str]  # (namespace, BatchPrediction uid)
MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}
INDEXES = ("jobs_by_run", "pods_by_run", "reports_by_run")
QueueKey = tuple[str, str]  # (namespace, Kueue LocalQueue name)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's ServiceAccount (its files found through `in_pod`), else the kubeconfig."""
    if not in_cluster():
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.ConnectionInfo(
        server=api_server_url(),
        ca_path=str(service_account_ca()),
        token=service_account_token(),
        scheme="Bearer",
    )


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = load_config()
    # With peering, the replica of the highest priority works and the others stand by; equal
    # priorities would all pause, so every process draws its own.
    settings.peering.priority = secrets.randbelow(2**31)
    memo.config = config
    memo.api = await api_client()
    memo.tracker = metrics.PhaseTracker()
    memo.admitted = set()  # runs this process let start, until the index shows them started
    memo.worker_access = set()  # (namespace, ServiceAccount) known to be bound
    # Keep kopf's bookkeeping out of status: status is ours, computed from the children.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.WARNING  # we post our own Events on transitions
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # No cap on kopf's per-object workers: with a cap below the number of runs, the workers
    # that wait for the indexes to fill starve the ones that would fill them (found at 100 runs).
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=listen_address())


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.api.close()


# -- indexes: what the timer reads instead of calling the API ---------------------------------


# Children are keyed by the run that owns them (its UID in their owner reference), never by a
# label: a Job or report counts only when the run is its owner.
@kopf.index("batch", "v1", "jobs", labels=MANAGED)
def jobs_by_run(*, body: kopf.Body, namespace: str | None, meta: kopf.Meta, **_: Any) -> Any:
    run = controller_uid(meta, "BatchPrediction")
    return {(namespace, run): JobState.from_job(body)} if run else {}


@kopf.index("", "v1", "pods", labels=MANAGED)
def pods_by_run(*, body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> Any:
    """Finished worker pods: what plan and finalize found, and each completed shard's exit
    summary (its counts when its progress report never reached the API server). The run's
    UID label only groups them; `observe_run` keeps those of the run's own Jobs."""
    result = PodResult.from_pod(body, WORKER_CONTAINER)
    return {(namespace, labels.get(LABEL_RUN, "")): result} if result else {}


@kopf.index(GROUP, VERSION, REPORT_PLURAL)
def reports_by_run(*, body: kopf.Body, namespace: str | None, meta: kopf.Meta, **_: Any) -> Any:
    run = owner_uid(meta, "BatchPrediction")
    if not run:
        return {}
    report = BatchPredictionShard.model_validate(dict(body))
    return {(namespace, run): report} if report.spec.run_uid == run else {}


@kopf.index(GROUP, VERSION, PLURAL)
def runs(
    *, body: kopf.Body, uid: str, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> Any:
    """Every run's creation time and claim on a slot: the FIFO cap needs the whole fleet."""
    progressing = [c for c in status.get("conditions") or [] if c.get("type") == "Progressing"]
    reason = progressing[0].get("reason") if progressing else None
    claim = slot_claim(status.get("phase"), bool(spec.get("suspend")), reason)
    return {None: (meta.get("creationTimestamp", ""), uid, claim)}


def workloads_by_queue(*, body: kopf.Body, namespace: str | None, **_: Any) -> Any:
    """Kueue's Workloads by LocalQueue: a queued run's own (found by its Job's UID) and the
    ones it waits behind. Registered only with `kueue: true` (the CRD must exist)."""
    workload = WorkloadState.from_workload(body)
    return {(namespace, workload.queue_name): workload} if workload.queue_name else {}


if load_config().kueue:
    kopf.index(KUEUE_GROUP, KUEUE_VERSION, WORKLOAD_PLURAL)(workloads_by_queue)


def observe(
    key: RunKey,
    indexes: dict[str, kopf.Index[Any, Any]],
    queue: QueueKey | None,
) -> Observed:
    """The run's children from the indexes, and its Kueue LocalQueue's Workloads."""
    workloads = indexes.get("workloads_by_queue")
    return observe_run(
        datetime.now(UTC),
        jobs=tuple(indexes["jobs_by_run"].get(key, [])),
        reports=tuple(indexes["reports_by_run"].get(key, [])),
        pods=tuple(indexes["pods_by_run"].get(key, [])),
        queue=tuple(workloads.get(queue, [])) if workloads is not None and queue else (),
    )


def is_admitted(uid: str, fleet: list[tuple[str, str, SlotClaim]], memo: kopf.Memo) -> bool:
    """Whether the cap (maxRunning) lets this run run now; FIFO by creation time."""
    config: OperatorConfig = memo.config
    if config.max_running is None:
        return True
    # Admitted by this process and not yet seen holding in the index: they count as holding.
    # Once the index shows them holding, or needing no slot (suspended, finished), they go.
    memo.admitted -= {u for _, u, claim in fleet if claim is not SlotClaim.WAITING}
    holding = {u for _, u, claim in fleet if claim is SlotClaim.HOLDING} | memo.admitted
    waiting = [
        (created, u) for created, u, claim in fleet
        if claim is SlotClaim.WAITING and u not in holding
    ]  # fmt: skip
    if uid in holding:
        return True
    allowed = admitted_runs(waiting, len(holding), config.max_running)
    if uid in allowed:
        memo.admitted.add(uid)
        return True
    return False


# -- the reconcile timer ----------------------------------------------------------------------


@kopf.timer(GROUP, VERSION, PLURAL, interval=load_config().status_interval_seconds)
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
    old_status = dict(body.get("status") or {})
    try:
        bp = parse_batch_prediction(dict(body))
    except InvalidSpecError as error:
        _reject(body, old_status, "InvalidSpec", str(error), patch)
        return
    indexes = {name: kwargs[name] for name in INDEXES}  # kopf passes indexes by name
    if "workloads_by_queue" in kwargs:
        indexes["workloads_by_queue"] = kwargs["workloads_by_queue"]
    queue = (namespace or "", bp.spec.queue_name) if bp.spec.queue_name else None
    observed = observe((namespace or "", uid), indexes, queue)
    admitted = is_admitted(uid, list(kwargs["runs"].get(None, [])), memo)
    decision = reconcile_run(bp, observed, memo.config, admitted=admitted)
    # Checked whenever the run would create a Job (plan, each round, finalize, a manual retry),
    # so a spec changed mid-run cannot slip past it; a finished run is left as it ended. No Job
    # of the run is running then: each step starts after the one before has finished.
    refused = policy_violations(bp.spec, memo.config) if decision.create else []
    if refused:
        message = "refused by the operator's policy: " + "; ".join(refused)
        revalidation = refuse_revalidation(decision, message)
        if revalidation is None:
            _reject(body, old_status, "PolicyViolation", message, patch)
            return
        decision = revalidation
    try:
        await _perform(bp, decision, memo, logger)
    except kube.RefusedError as error:
        _reject(body, old_status, "JobRefused", f"the API server refused {error}", patch)
        return
    if decision.delete_self:
        return
    changes = merge_patch(
        old_status, decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    )
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
    memo.tracker.observe_evaluation(
        uid, namespace or "", bp.metadata.get("name", ""), decision.status.evaluation
    )
    metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)


async def _perform(bp: BatchPrediction, decision: Decision, memo: kopf.Memo, log: Any) -> None:
    config: OperatorConfig = memo.config
    namespace, name = bp.metadata["namespace"], bp.metadata["name"]
    account = bp.spec.worker.service_account_name or config.worker_service_account
    if decision.create and (namespace, account) not in memo.worker_access:
        await kube.ensure_worker_access(
            memo.api,
            namespace,
            account,
            config.worker_cluster_role,
            create_service_account=bp.spec.worker.service_account_name is None,
        )
        # Once per namespace and account per process: creating Jobs is then one call.
        memo.worker_access.add((namespace, account))
    for job in decision.create:
        if await kube.create_job(memo.api, job):
            metrics.JOBS_CREATED.labels(role=job["metadata"]["labels"][LABEL_ROLE]).inc()
            log.info("created Job %s", job["metadata"]["name"])
    for job_name, job_patch in decision.patch_jobs:
        await kube.patch_job(memo.api, namespace, job_name, job_patch)
        log.info("patched Job %s: %s", job_name, job_patch)
    for workload, workload_patch in decision.patch_workloads:
        await kube.patch_workload(memo.api, namespace, workload, workload_patch)
        log.info("patched Workload %s: %s", workload, workload_patch)
    for report in decision.delete_reports:
        await kube.delete_report(memo.api, namespace, report)
    if decision.delete_self:
        log.info("ttlSecondsAfterFinished passed: deleting %s (outputs are kept)", name)
        await kube.delete_batch_prediction(memo.api, namespace, name)


def _reject(
    body: kopf.Body, old_status: dict[str, Any], reason: str, message: str, patch: kopf.Patch
) -> None:
    """A run that cannot run (a spec the API server let through, a Job it refuses) or may not
    (the operator's policy): Failed, with what to fix."""
    if old_status.get("phase") == Phase.FAILED.value:
        return
    now = datetime.now(UTC)
    failed = set_condition(
        [],
        ConditionType.FAILED,
        ConditionStatus.TRUE,
        reason,
        message,
        now=now,
        generation=body.get("metadata", {}).get("generation"),
    )
    status = BatchPredictionStatus(
        phase=Phase.FAILED,
        message=message,
        started_by=old_status.get("startedBy"),
        completion_time=now,
        conditions=failed,
    )
    patch.status.update(status.model_dump(mode="json", by_alias=True, exclude_none=True))
    kopf.event(body, type="Warning", reason=reason, message=message)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget(uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Jobs and pods go with their owner (garbage collection); outputs stay in storage."""
    memo.tracker.forget(uid)
    memo.admitted.discard(uid)
