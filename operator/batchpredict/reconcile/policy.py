"""Policies of a run: when to retry, and how a finished run is judged."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from batchpredict.api.v1alpha1.execution import BackoffSpec
from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.api.v1alpha1.status import BatchPredictionStatus, Phase


def retry_delay(backoff: BackoffSpec, attempt: int, seed: str) -> float:
    """Exponential backoff with jitter that is deterministic per (run, round), so a restarted
    operator computes the same nextRetryTime."""
    base = min(backoff.initial_seconds * backoff.factor**attempt, backoff.max_seconds)
    fraction = int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return min(base * (1 + backoff.jitter * fraction), backoff.max_seconds)


def terminal_phase(spec: BatchPredictionSpec, failed: int, total: int) -> Phase:
    """Succeeded, PartiallySucceeded or Failed by spec.failurePolicy."""
    if failed == 0:
        return Phase.SUCCEEDED
    policy = spec.failure_policy
    if policy.max_failed_items is not None and failed > policy.max_failed_items:
        return Phase.FAILED
    if (
        policy.max_failed_percent is not None
        and total
        and failed * 100 / total > policy.max_failed_percent
    ):
        return Phase.FAILED
    if failed >= total:
        return Phase.FAILED
    return Phase.PARTIALLY_SUCCEEDED


def admitted_runs(
    waiting: list[tuple[str, str]], holding: int, max_running: int | None
) -> set[str]:
    """FIFO admission under the operator's cap: `waiting` are (creationTimestamp, uid) of runs
    not started yet, `holding` the runs that hold a slot. The oldest waiting runs get the free
    slots."""
    if max_running is None:
        return {uid for _, uid in waiting}
    free = max(max_running - holding, 0)
    return {uid for _, uid in sorted(waiting)[:free]}


def deadline_passed(
    spec: BatchPredictionSpec, status: BatchPredictionStatus, now: datetime
) -> bool:
    """Whether the run is past spec.activeDeadlineSeconds. The window opens at startTime, or
    at the last manual retry: a retry of a run that timed out gets a whole window of its own
    instead of failing again at once."""
    limit = spec.active_deadline_seconds
    opened = status.retry_start_time or status.start_time
    return limit is not None and opened is not None and now > opened + timedelta(seconds=limit)
