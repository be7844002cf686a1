"""The run's state machine: status as a pure function of spec, children, reports and time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from batchpredict.api.v1alpha1 import BatchPrediction
from batchpredict.api.v1alpha1.report import BatchPredictionShard
from batchpredict.api.v1alpha1.status import ConditionType, Phase
from batchpredict.controller.config import OperatorConfig
from batchpredict.reconcile.decision import Decision
from batchpredict.reconcile.naming import Role
from batchpredict.reconcile.observed import JobState, Observed, StepOutcome, parse_indexes
from batchpredict.reconcile.patching import merge_patch
from batchpredict.reconcile.policy import retry_delay, terminal_phase
from batchpredict.reconcile.run import reconcile_run

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig()
SPEC: dict[str, Any] = {
    "model": {"name": "echo"},
    "triton": {"url": "triton:8001"},
    "input": {"uri": "/data/in.jsonl", "format": "jsonl"},
    "output": {"uri": "/data/out"},
    "retry": {"maxRounds": 0},
}


def bp(status: Any = None, **spec: Any) -> BatchPrediction:
    meta = {"name": "run", "namespace": "ml", "uid": "u-1", "generation": 1}
    return BatchPrediction.model_validate(
        {"metadata": meta, "spec": {**SPEC, **spec}, "status": status}
    )


def job(role: Role, round_: int = 0, **status: Any) -> JobState:
    status.setdefault("parallelism", 2)  # as the operator creates it for the 2 planned shards
    return JobState(
        name=f"run-{role.value}-{round_}", role=role, round=round_, completions=1, **status
    )


def report(
    shard: int, ok: int, failed: int = 0, *, retryable: int = 0, done: bool = True, round_: int = 0
) -> BatchPredictionShard:
    return BatchPredictionShard.model_validate(
        {
            "spec": {"batchPrediction": "run", "runUid": "u-1", "round": round_, "shard": shard},
            "progress": {
                "itemsTotal": ok + failed,
                "succeeded": ok,
                "failed": failed,
                "retryableFailed": retryable,
                "itemsPerSecond": 0 if done else 50.0,
                "finished": done,
                "failureCounts": {"INVALID_ARGUMENT": failed - retryable, "UNAVAILABLE": retryable}
                if failed
                else {},
                "failedSample": [
                    {
                        "id": f"item-{shard}",
                        "shard": shard,
                        "code": "INVALID_ARGUMENT",
                        "message": "bad",
                    }
                ]
                if failed - retryable
                else [],
            },
        }
    )


PLANNED = StepOutcome(succeeded=True, data={"total": 100, "shards": 2})


@dataclass(frozen=True)
class Finalized:
    """What the finalize pod counted in the files (its termination message)."""

    outcome: StepOutcome


def finalized(
    succeeded: int = 100, failed: int = 0, *, codes: dict[str, int] | None = None, **more: Any
) -> Finalized:
    codes = codes if codes is not None else ({"INVALID_ARGUMENT": failed} if failed else {})
    data = {"total": succeeded + failed, "succeeded": succeeded, "failed": failed}
    return Finalized(StepOutcome(succeeded=True, data={**data, "failureCounts": codes, **more}))


def name(suffix: str) -> str:
    """A child's name for the test run (name `run`, UID `u-1`)."""
    return f"run-u-1-{suffix}"


def step(
    previous: Decision | None, *observed: Any, at: timedelta = timedelta(0), **spec: Any
) -> Decision:
    status = previous.status.model_dump(mode="json", by_alias=True) if previous else None
    jobs = tuple(o for o in observed if isinstance(o, JobState))
    reports = tuple(o for o in observed if isinstance(o, BatchPredictionShard))
    plan = next((o for o in observed if isinstance(o, StepOutcome)), None)
    final = next((o.outcome for o in observed if isinstance(o, Finalized)), None)
    exits = next((o for o in observed if isinstance(o, dict)), {})
    return reconcile_run(
        bp(status, **spec),
        Observed(
            now=T0 + at,
            jobs=jobs,
            reports=reports,
            plan=plan,
            finalize=final,
            shard_results=exits,
        ),
        CONFIG,
    )


def condition(decision: Decision, type_: ConditionType) -> str:
    return next(c.status.value for c in decision.status.conditions if c.type == type_.value)


def test_a_new_run_creates_its_plan_job_and_is_pending() -> None:
    d = step(None)
    assert d.status.phase is Phase.PENDING
    assert [j["metadata"]["name"] for j in d.create] == [name("plan")]
    assert d.status.start_time == T0
    assert d.events[0].reason == "Pending"


def test_existing_plan_job_is_never_created_twice() -> None:
    d = step(step(None), job(Role.PLAN, active=1))
    assert d.create == []
    assert d.events == []  # same phase: no Event


def test_plan_success_creates_round_zero_with_the_planned_shards() -> None:
    d = step(step(None), job(Role.PLAN, complete=True), PLANNED)
    assert d.status.phase is Phase.PENDING or d.status.phase is Phase.RUNNING
    (created,) = d.create
    assert created["metadata"]["name"] == name("r0")
    assert created["spec"]["completions"] == 2
    assert d.status.items is not None and d.status.items.total == 100
    assert condition(d, ConditionType.MODEL_READY) == "True"


def test_missing_model_fails_the_run_with_the_reason() -> None:
    outcome = StepOutcome(
        succeeded=False,
        data={"reason": "ModelNotFound", "message": "model 'nope' is not on triton:8001"},
    )
    d = step(step(None), job(Role.PLAN, failed=True, failure_reason="PodFailurePolicy"), outcome)
    assert d.status.phase is Phase.FAILED
    assert "model 'nope' is not on triton:8001" in (d.status.message or "")
    assert condition(d, ConditionType.MODEL_READY) == "False"
    assert condition(d, ConditionType.FAILED) == "True"
    assert d.events[-1].type == "Warning"
    assert d.status.completion_time == T0


def test_progress_grows_from_reports_then_the_run_succeeds() -> None:
    planned = step(step(None), job(Role.PLAN, complete=True), PLANNED)
    plan_done = job(Role.PLAN, complete=True)
    running = step(
        planned,
        plan_done,
        PLANNED,
        job(Role.SHARDS, active=2),
        report(0, 30, done=False),
        report(1, 10, done=False),
        at=timedelta(seconds=2),
    )
    assert running.status.phase is Phase.RUNNING
    assert running.status.progress == "40%"
    assert running.status.items is not None and running.status.items.pending == 60
    assert running.status.items_per_second == 100.0
    assert running.status.eta == "0s"
    finished_job = job(Role.SHARDS, complete=True, completed=frozenset({0, 1}))
    both = (plan_done, PLANNED, finished_job, report(0, 50), report(1, 50))
    finalizing = step(running, *both, at=timedelta(seconds=4))
    assert [j["metadata"]["name"] for j in finalizing.create] == [name("finalize")]
    counting = step(finalizing, *both, job(Role.FINALIZE, complete=True), at=timedelta(seconds=5))
    assert counting.status.phase is Phase.RUNNING, "no terminal phase before finalize's counts"
    final = (*both, job(Role.FINALIZE, complete=True), finalized(100))
    done = step(finalizing, *final, at=timedelta(seconds=6))
    assert done.status.phase is Phase.SUCCEEDED
    assert done.status.progress == "100%"
    assert condition(done, ConditionType.COMPLETE) == "True"
    assert done.status.completion_time == T0 + timedelta(seconds=6)
    again = step(done, *final, at=timedelta(seconds=8))
    assert (
        merge_patch(done.status.model_dump(mode="json"), again.status.model_dump(mode="json")) == {}
    ), "a finished run's status does not change"


def test_rejected_items_make_the_run_partially_succeeded() -> None:
    children = (
        job(Role.PLAN, complete=True),
        PLANNED,
        job(Role.SHARDS, complete=True),
        report(0, 48, 2),
        report(1, 50),
        job(Role.FINALIZE, complete=True),
        finalized(
            98,
            2,
            failedSample=[
                {"id": "item-0", "shard": 0, "code": "INVALID_ARGUMENT", "message": "bad"}
            ],
        ),
    )
    d = step(step(None), *children)
    assert d.status.phase is Phase.PARTIALLY_SUCCEEDED
    assert d.status.items is not None and d.status.items.failed == 2
    assert (d.status.items.pending, d.status.items.retrying) == (0, 0)
    assert [i.id for i in d.status.failed_items] == ["item-0"]
    assert d.status.failure_summary[0].code == "INVALID_ARGUMENT"
    assert d.status.failure_summary[0].count == 2
    policy = step(step(None), *children, failurePolicy={"maxFailedItems": 1})
    assert policy.status.phase is Phase.FAILED


def test_terminal_phase_by_failure_policy() -> None:
    spec = bp().spec
    assert terminal_phase(spec, 0, 10) is Phase.SUCCEEDED
    assert terminal_phase(spec, 3, 10) is Phase.PARTIALLY_SUCCEEDED
    assert terminal_phase(spec, 10, 10) is Phase.FAILED
    strict = bp(failurePolicy={"maxFailedPercent": 20}).spec
    assert terminal_phase(strict, 2, 10) is Phase.PARTIALLY_SUCCEEDED
    assert terminal_phase(strict, 3, 10) is Phase.FAILED


def test_stalled_after_the_timeout_without_progress() -> None:
    children = (
        job(Role.PLAN, complete=True),
        PLANNED,
        job(Role.SHARDS, active=2),
        report(0, 5, done=False),
    )
    first = step(step(None), *children, stallTimeoutSeconds=60)
    assert condition(first, ConditionType.STALLED) == "False"
    later = step(first, *children, at=timedelta(seconds=61), stallTimeoutSeconds=60)
    assert condition(later, ConditionType.STALLED) == "True"
    stalled_since = next(c for c in later.status.conditions if c.type == "Stalled")
    still = step(later, *children, at=timedelta(seconds=90), stallTimeoutSeconds=60)
    same = next(c for c in still.status.conditions if c.type == "Stalled")
    assert same.last_transition_time == stalled_since.last_transition_time


def test_retryable_failures_start_a_new_round_after_backoff() -> None:
    spec = {"retry": {"maxRounds": 2, "backoff": {"initialSeconds": 30, "jitter": 0}}}
    ended = T0 + timedelta(seconds=10)
    children = (
        job(Role.PLAN, complete=True),
        PLANNED,
        job(Role.SHARDS, complete=True, completion_time=ended),
        report(0, 45, 5, retryable=5),
        report(1, 50),
    )
    waiting = step(step(None, **spec), *children, at=timedelta(seconds=20), **spec)
    assert waiting.status.phase is Phase.RETRYING
    assert waiting.status.next_retry_time == ended + timedelta(seconds=30)
    assert waiting.status.items is not None and waiting.status.items.retrying == 5
    assert waiting.create == []
    due = step(waiting, *children, at=timedelta(seconds=41), **spec)
    assert [j["metadata"]["name"] for j in due.create] == [name("r1")]
    retried = (
        *children,
        job(Role.SHARDS, 1, complete=True),
        report(0, 5, round_=1),
        report(1, 0, round_=1),
    )
    finalized_step = job(Role.FINALIZE, 1, complete=True)  # the last round's finalize step
    final = step(due, *retried, finalized_step, finalized(100), at=timedelta(seconds=60), **spec)
    assert final.status.phase is Phase.SUCCEEDED
    assert final.status.items is not None
    assert (final.status.items.succeeded, final.status.items.failed) == (100, 0)
    assert final.status.round == 1


def test_broken_shards_count_their_items_as_not_processed() -> None:
    children = (
        job(Role.PLAN, complete=True),
        PLANNED,
        job(Role.SHARDS, failed=True, failed_set=frozenset({1})),
        report(0, 50),
    )
    policy = {"failurePolicy": {"maxFailedPercent": 5}}
    d = step(step(None, **policy), *children, **policy)
    assert d.status.items is not None and d.status.items.failed == 50
    assert d.status.items.pending == 0
    assert d.status.failure_summary[0].code == "NOT_PROCESSED"
    assert d.status.failure_summary[0].retryable
    assert d.status.phase is Phase.RUNNING, "finalize counts the files before the run ends"
    counted = finalized(50, 50, codes={"NOT_PROCESSED": 50}, retryableCounts={"NOT_PROCESSED": 50})
    done = step(d, *children, job(Role.FINALIZE, complete=True), counted, **policy)
    assert done.status.phase is Phase.FAILED, "50% failed is more than 5%"
    assert done.status.items is not None and done.status.items.pending == 0


def test_backoff_grows_and_is_capped() -> None:
    backoff = bp().spec.retry.backoff.model_copy(update={"jitter": 0})
    assert [retry_delay(backoff, n, "s") for n in range(6)] == [30, 60, 120, 240, 480, 600]
    jittered = bp().spec.retry.backoff
    assert retry_delay(jittered, 0, "a") == retry_delay(jittered, 0, "a")
    assert 30 <= retry_delay(jittered, 0, "b") <= 33


def test_parse_indexes() -> None:
    assert parse_indexes(None) == frozenset()
    assert parse_indexes("0-4") == {0, 1, 2, 3, 4}
    assert parse_indexes("1,3-5,9") == {1, 3, 4, 5, 9}


def test_merge_patch_nulls_what_went_away() -> None:
    old = {"phase": "Running", "eta": "1m", "items": {"succeeded": 1, "failed": 0}}
    new = {"phase": "Running", "items": {"succeeded": 2, "failed": 0}}
    assert merge_patch(old, new) == {"eta": None, "items": {"succeeded": 2}}
    assert merge_patch(new, new) == {}
