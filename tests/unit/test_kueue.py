"""A run in a Kueue queue: suspend and resume through its Workload, the operator's cap on a
resumed run, and the queue position and time waited in its message."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from batchpredict.api.v1alpha1.status import Phase
from batchpredict.controller.config import OperatorConfig
from batchpredict.reconcile.decision import Decision
from batchpredict.reconcile.kueue import WorkloadState, queue_position, waiting_message
from batchpredict.reconcile.naming import Role
from batchpredict.reconcile.observed import JobState, Observed, StepOutcome
from batchpredict.reconcile.policy import SlotClaim, slot_claim
from batchpredict.reconcile.run import reconcile_run
from tests.unit.test_run import CONFIG, PLANNED, T0, bp, job

QUEUE = {"queueName": "gpu"}
KUEUE_CONFIG = CONFIG.model_copy(update={"kueue": True})
RUNNING = (job(Role.PLAN, complete=True), PLANNED)


def workload(
    name: str,
    *,
    created: int = 0,
    job_uid: str = "",
    queue: str = "gpu",
    active: bool | None = None,
    priority: int | None = None,
    reserved: bool = False,
    message: str = "",
    requeued_at: int | None = None,
) -> dict[str, Any]:
    """A Workload as the API server returns it (v1beta2), `created` seconds after T0."""
    stamp = (T0 + timedelta(seconds=created)).strftime("%Y-%m-%dT%H:%M:%SZ")
    spec: dict[str, Any] = {"queueName": queue, "podSets": []}
    if active is not None:
        spec["active"] = active
    if priority is not None:
        spec["priority"] = priority
    conditions = [
        {
            "type": "QuotaReserved",
            "status": "True" if reserved else "False",
            "reason": "QuotaReserved" if reserved else "Pending",
            "message": message,
            "lastTransitionTime": stamp,
        }
    ]
    if requeued_at is not None:
        at = (T0 + timedelta(seconds=requeued_at)).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions.append(
            {
                "type": "Requeued",
                "status": "True",
                "reason": "Reactivated",
                "lastTransitionTime": at,
            }
        )
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "Workload",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "creationTimestamp": stamp,
            "labels": {"kueue.x-k8s.io/job-uid": job_uid} if job_uid else {},
        },
        "spec": spec,
        "status": {"conditions": conditions},
    }


def state(name: str, **kwargs: Any) -> WorkloadState:
    return WorkloadState.from_workload(workload(name, **kwargs))


def shards(**status: Any) -> JobState:
    return job(Role.SHARDS, uid="job-uid", **status)


def run(
    previous: Decision | None,
    *children: Any,
    admitted: bool = True,
    at: int = 60,
    config: OperatorConfig = KUEUE_CONFIG,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> Decision:
    """One reconcile of a queued run (spec.queueName gpu) with `children`: Jobs, the plan's
    outcome and the LocalQueue's Workloads."""
    status = previous.status.model_dump(mode="json", by_alias=True) if previous else None
    run_bp = bp(status, **{**QUEUE, **spec})
    if annotations:
        run_bp = run_bp.model_copy(
            update={"metadata": {**run_bp.metadata, "annotations": annotations}}
        )
    observed = Observed(
        now=T0 + timedelta(seconds=at),
        jobs=tuple(c for c in children if isinstance(c, JobState)),
        plan=next((c for c in children if isinstance(c, StepOutcome)), None),
        queue=tuple(c for c in children if isinstance(c, WorkloadState)),
    )
    return reconcile_run(run_bp, observed, config, admitted=admitted)


def test_a_workload_is_read_from_its_api_object() -> None:
    w = state(
        "job-run-abc",
        created=5,
        job_uid="job-uid",
        priority=3,
        message="couldn't assign flavors to pod set main: insufficient unused quota for cpu",
    )
    assert (w.name, w.job_uid, w.queue_name, w.priority) == ("job-run-abc", "job-uid", "gpu", 3)
    assert w.active and w.pending and not w.quota_reserved
    assert w.waiting_since == T0 + timedelta(seconds=5)
    assert "insufficient unused quota" in w.pending_message
    assert not state("x", active=False).pending
    assert not state("x", reserved=True).pending
    assert state("x", reserved=True, message="admitted").pending_message == ""
    # A reactivated Workload has waited since it went back in the queue.
    assert state("x", requeued_at=50).waiting_since == T0 + timedelta(seconds=50)


def test_the_queue_position_follows_kueues_order_priority_then_age() -> None:
    ours = state("ours", created=10)
    queue = [
        state("older", created=1),
        state("urgent", created=20, priority=100),
        state("newer", created=30),
        state("running", created=0, reserved=True),
        state("parked", created=0, active=False),
        state("elsewhere", created=0, queue="cpu"),
        ours,
    ]
    assert queue_position(ours, queue) == (3, 4)
    assert queue_position(state("running", reserved=True), queue) == (0, 4)


def test_the_waiting_message_names_the_queue_position_time_and_kueues_reason() -> None:
    ours = state("ours", created=10, message="insufficient unused quota for cpu in flavor default")
    later = T0 + timedelta(hours=3, minutes=5, seconds=10)
    message = waiting_message("gpu", ours, [state("first", created=0), ours], later)
    assert "LocalQueue gpu: position 2 of 2 pending, for 3h05m (since 12:00:10Z)" in message
    assert message.endswith("; Kueue: insufficient unused quota for cpu in flavor default")
    short = waiting_message("gpu", ours, [ours], T0 + timedelta(seconds=52))
    assert "position 1 of 1 pending, for <1m (since 12:00:10Z)" in short
    assert "for 2m " in waiting_message("gpu", ours, [ours], T0 + timedelta(seconds=170))
    assert "Kueue to queue the Job" in waiting_message("gpu", None, [], T0)


def test_a_queued_run_waits_with_its_position_then_runs_when_kueue_admits_it() -> None:
    planned = run(run(None), *RUNNING)
    assert planned.create[0]["spec"]["suspend"] is True
    assert planned.create[0]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    ours = state("ours", created=10, job_uid="job-uid", message="insufficient unused quota")
    ahead = state("ahead", created=0)
    queued = run(planned, *RUNNING, shards(suspended=True), ahead, ours, at=40)
    assert queued.status.phase is Phase.QUEUED
    assert "position 2 of 2 pending, for <1m (since 12:00:10Z); Kueue: insufficient" in str(
        queued.status.message
    )
    assert queued.patch_jobs == [] and queued.patch_workloads == []
    admitted = run(
        queued, *RUNNING, shards(active=2), state("ours", reserved=True, job_uid="job-uid")
    )
    assert admitted.status.phase is Phase.RUNNING
    assert admitted.patch_jobs == [] and admitted.patch_workloads == []


def test_suspending_a_queued_run_deactivates_its_workload_not_the_job() -> None:
    """Kueue owns the Job's suspend (it would undo a patch while the Workload is admitted):
    deactivating the Workload makes Kueue evict it and suspend the Job itself."""
    admitted = state("ours", reserved=True, job_uid="job-uid")
    running = run(run(None), *RUNNING, shards(active=2), admitted)
    suspended = run(running, *RUNNING, shards(active=2), admitted, suspend=True)
    assert suspended.patch_workloads == [("ours", {"spec": {"active": False}})]
    assert suspended.patch_jobs == []
    assert suspended.status.phase is Phase.SUSPENDED
    assert "stopping 2 worker pod(s)" in str(suspended.status.message)
    parked = state("ours", active=False, job_uid="job-uid")
    stopped = run(suspended, *RUNNING, shards(suspended=True), parked, suspend=True)
    assert stopped.patch_workloads == []
    assert "stopping" not in str(stopped.status.message)
    assert "LocalQueue gpu again" in str(stopped.status.message)
    # An operator that does not watch Workloads says it cannot stop the pods.
    blind = run(running, *RUNNING, shards(active=2), suspend=True, config=CONFIG)
    assert blind.patch_workloads == [] and blind.patch_jobs == []
    assert "without `kueue: true`" in str(blind.status.message)


def test_a_resumed_queued_run_reactivates_its_workload_once_the_cap_lets_it() -> None:
    parked = state("ours", active=False, job_uid="job-uid")
    suspended = run(run(None), *RUNNING, shards(suspended=True), parked, suspend=True)
    over_cap = run(suspended, *RUNNING, shards(suspended=True), parked, admitted=False)
    assert over_cap.status.phase is Phase.QUEUED
    assert "maxRunning" in str(over_cap.status.message)
    assert over_cap.patch_workloads == [], "the Workload stays out of Kueue's queue"
    resumed = run(over_cap, *RUNNING, shards(suspended=True), parked)
    assert resumed.patch_workloads == [("ours", {"spec": {"active": True}})]
    assert resumed.status.phase is Phase.QUEUED  # back in Kueue's queue until admitted


def test_a_resumed_run_without_a_queue_waits_for_a_slot_before_its_job_resumes() -> None:
    suspended = run(run(None, queueName=None), *RUNNING, shards(suspended=True), suspend=True,
                    queueName=None)  # fmt: skip
    over_cap = run(suspended, *RUNNING, shards(suspended=True), admitted=False, queueName=None)
    assert over_cap.patch_jobs == []
    assert over_cap.status.phase is Phase.QUEUED
    resumed = run(over_cap, *RUNNING, shards(suspended=True), queueName=None)
    assert resumed.patch_jobs == [("run-shards-0", {"spec": {"suspend": False}})]


def test_a_queued_run_suspended_before_its_shards_job_creates_none() -> None:
    """Kueue would admit a new Job's Workload at once: it is created only when it may run."""
    d = run(run(None), *RUNNING, suspend=True)
    assert d.create == []
    assert d.status.phase is Phase.SUSPENDED
    assert run(run(None), *RUNNING, admitted=False).create == []


def test_cancelling_a_queued_run_deactivates_its_workload() -> None:
    admitted = state("ours", reserved=True, job_uid="job-uid")
    running = run(run(None), *RUNNING, shards(active=2), admitted)
    cancel = {"batchpredict.io/cancel": "true"}
    d = run(running, *RUNNING, shards(active=2), admitted, annotations=cancel)
    assert d.patch_workloads == [("ours", {"spec": {"active": False}})]
    assert d.patch_jobs == [], "the shard Job is Kueue's to suspend; the plan has finished"
    assert "stopping the worker pods" in str(d.status.message)


@pytest.mark.parametrize(
    ("phase", "suspend", "reason", "claim"),
    [
        (None, False, None, SlotClaim.WAITING),
        ("Queued", False, "WaitingForSlot", SlotClaim.WAITING),
        ("Pending", False, "Planning", SlotClaim.HOLDING),
        ("Running", False, "Running", SlotClaim.HOLDING),
        ("Retrying", False, "Retrying", SlotClaim.HOLDING),
        # Started by the operator, waiting for Kueue's quota: it keeps its slot.
        ("Queued", False, "WaitingForKueue", SlotClaim.HOLDING),
        # Suspended: the slot is given back; resumed: it takes its turn again.
        ("Running", True, "Running", SlotClaim.NONE),
        ("Pending", True, "Planning", SlotClaim.HOLDING),  # its plan pod runs to its end
        ("Suspended", True, "Suspended", SlotClaim.NONE),
        ("Suspended", False, "Suspended", SlotClaim.WAITING),
        ("Succeeded", False, "Succeeded", SlotClaim.NONE),
        ("Failed", True, "Failed", SlotClaim.NONE),
    ],
)
def test_slot_claims(
    phase: str | None, suspend: bool, reason: str | None, claim: SlotClaim
) -> None:
    assert slot_claim(phase, suspend, reason) is claim
