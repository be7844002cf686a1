"""Kueue's side of a queued run, read from its Workload objects (kueue.x-k8s.io/v1beta2).

With `spec.queueName`, Kueue owns the shard Job's `spec.suspend`: it unsuspends the Job when it
admits the Job's Workload and suspends it when it evicts it, and puts back any change made by
someone else. So the operator steers a queued run through the Workload instead: `spec.active:
false` makes Kueue evict it (the Job is suspended, its pods stop) and keep it out of the queue;
`true` puts it back in the queue at its old place (Kueue orders by priority, then creation).

The queue position is computed here from the Workloads of the run's LocalQueue, in Kueue's
order (priority, then creation time). Kueue's own answer (the on-demand visibility API,
`pendingworkloads`) needs its aggregated API server to be reachable through the API server;
the Workloads are always there. The limitation: workloads of other namespaces that share the
ClusterQueue are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
WORKLOAD_PLURAL = "workloads"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # Kueue's label on the Workload of a Job


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class WorkloadState:
    """What the operator needs of one Workload."""

    name: str
    job_uid: str
    queue_name: str
    created: datetime
    active: bool = True
    priority: int = 0
    quota_reserved: bool = False
    finished: bool = False
    # Since when it waits for quota: creation, or its last requeue (a reactivation).
    waiting_since: datetime | None = None
    # Why Kueue has not admitted it yet (its QuotaReserved=False message), when it says.
    pending_message: str = ""

    @property
    def pending(self) -> bool:
        """In the queue: active, not admitted, not finished."""
        return self.active and not self.quota_reserved and not self.finished

    @classmethod
    def from_workload(cls, body: Mapping[str, Any]) -> WorkloadState:
        meta, spec = body["metadata"], body.get("spec") or {}
        status = body.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        created = _time(meta.get("creationTimestamp")) or datetime(1970, 1, 1, tzinfo=UTC)
        since = created
        requeued = conditions.get("Requeued")
        if requeued and requeued.get("status") == "True":
            at = _time(requeued.get("lastTransitionTime"))
            since = max(since, at) if at else since
        reserved = conditions.get("QuotaReserved", {})
        return cls(
            name=meta["name"],
            job_uid=(meta.get("labels") or {}).get(JOB_UID_LABEL, ""),
            queue_name=str(spec.get("queueName") or ""),
            created=created,
            active=spec.get("active", True) is not False,
            priority=int(spec.get("priority") or 0),
            quota_reserved=reserved.get("status") == "True",
            finished=conditions.get("Finished", {}).get("status") == "True",
            waiting_since=since,
            pending_message=str(reserved.get("message") or "")
            if reserved.get("status") == "False"
            else "",
        )


def queue_position(workload: WorkloadState, queue: Iterable[WorkloadState]) -> tuple[int, int]:
    """(1-based position, pending count) of `workload` among the pending Workloads of its
    LocalQueue, in Kueue's order: higher priority first, then older first."""
    pending = sorted(
        (w for w in queue if w.pending and w.queue_name == workload.queue_name),
        key=lambda w: (-w.priority, w.created, w.name),
    )
    names = [w.name for w in pending]
    if workload.name not in names:
        return 0, len(pending)
    return names.index(workload.name) + 1, len(pending)


def waited(seconds: float) -> str:
    """Minutes, so that a waiting run's message (and its status) changes once a minute, not
    at every reconcile."""
    minutes = max(int(seconds), 0) // 60
    if minutes < 1:
        return "<1m"
    if minutes < 60:
        return f"{minutes}m"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def waiting_message(
    queue_name: str, workload: WorkloadState | None, queue: Iterable[WorkloadState], now: datetime
) -> str:
    """What a run waiting for Kueue tells its user: where it stands and for how long."""
    if workload is None:
        return f"waiting for Kueue to queue the Job in LocalQueue {queue_name}"
    position, pending = queue_position(workload, queue)
    since = workload.waiting_since or workload.created
    where = f"position {position} of {pending}" if position else "not counted yet"
    message = (
        f"waiting in Kueue LocalQueue {queue_name}: {where} pending, "
        f"for {waited((now - since).total_seconds())} (since {since:%H:%M:%S}Z)"
    )
    if workload.pending_message:
        message += f"; Kueue: {workload.pending_message}"
    return message
