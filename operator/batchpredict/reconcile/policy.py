"""Policies of a run: when to retry, and how a finished run is judged."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from enum import StrEnum

from batchpredict.api.v1alpha1.execution import BackoffSpec
from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.api.v1alpha1.status import TERMINAL_PHASES, BatchPredictionStatus, Phase


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


class SlotClaim(StrEnum):
    """A run's relation to the operator's `maxRunning` slots."""

    HOLDING = "holding"  # it has started and may go on
    WAITING = "waiting"  # it wants to run: not started yet, or resumed after a suspend
    NONE = "none"  # finished or suspended: it needs no slot


# Progressing reasons of a Queued run that holds its slot: it waits for Kueue's quota.
HOLDING_QUEUED_REASONS = {"WaitingForKueue"}
HOLDING_PHASES = {Phase.PENDING.value, Phase.RUNNING.value, Phase.RETRYING.value}


def slot_claim(phase: str | None, suspend: bool, progressing_reason: str | None) -> SlotClaim:
    """A suspended run gives its slot back, and takes its turn for one again when resumed, so
    a resume never bypasses the cap. A queued run that the operator started keeps its slot
    while it waits in Kueue's queue: Kueue's admission then never exceeds the cap either."""
    if phase in {p.value for p in TERMINAL_PHASES}:
        return SlotClaim.NONE
    if phase == Phase.PENDING.value:  # the plan step runs to its end even when suspended
        return SlotClaim.HOLDING
    if suspend:
        return SlotClaim.NONE
    if phase in HOLDING_PHASES:
        return SlotClaim.HOLDING
    if phase == Phase.QUEUED.value and progressing_reason in HOLDING_QUEUED_REASONS:
        return SlotClaim.HOLDING
    return SlotClaim.WAITING
