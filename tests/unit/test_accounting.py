"""Every item a round was given is accounted for: status counts under faults (lost reports,
shards broken in any round, operator restarts, Triton down), before finalize's file counts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from batchpredict.api.v1alpha1.report import BatchPredictionShard
from batchpredict.api.v1alpha1.status import ConditionType, Phase
from batchpredict.api.validation import InvalidSpecError, parse_batch_prediction
from batchpredict.planning import MAX_SHARDS, ShardPlan, plan_shards
from batchpredict.reconcile.naming import Role
from batchpredict.reconcile.observed import (
    COMPLETION_INDEX,
    JobState,
    PodResult,
    StepOutcome,
    observe_run,
)
from batchpredict.reconcile.progress import RoundView, ShardOutcome, aggregate_progress
from tests.unit.test_run import PLANNED, T0, bp, condition, finalized, job, report, step

PLAN = ShardPlan(total_items=100, shards=2)
DONE = (job(Role.PLAN, complete=True), PLANNED)


def outcome(
    total: int, ok: int, failed: int = 0, retryable: int = 0, done: bool = True
) -> ShardOutcome:
    codes = {"UNAVAILABLE": retryable, "INVALID_ARGUMENT": failed - retryable}
    return ShardOutcome(
        items_total=total,
        succeeded=ok,
        failed=failed,
        retryable_failed=retryable,
        finished=done,
        failure_counts={c: n for c, n in codes.items() if n},
        retryable_counts={"UNAVAILABLE": retryable} if retryable else {},
    )


def test_a_shard_broken_for_good_in_round_one_is_counted_not_processed() -> None:
    rounds = [
        RoundView(0, {0: outcome(50, 40, 10, 10), 1: outcome(50, 50)}, finished=True),
        # Round 1 was given shard 0's 10 retryable failures; its pod never reported.
        RoundView(1, {}, finished=True),
    ]
    p = aggregate_progress(PLAN, rounds)
    assert (p.items.succeeded, p.items.failed, p.items.pending) == (90, 10, 0)
    assert p.items.retrying == 10
    assert [(e.code, e.count) for e in p.failure_summary] == [("NOT_PROCESSED", 10)]


def test_items_handed_to_a_retry_round_stay_failed_until_redone() -> None:
    first = [RoundView(0, {0: outcome(50, 40, 10, 10), 1: outcome(50, 50)}, finished=True)]
    before = aggregate_progress(PLAN, first)
    running = [first[0], RoundView(1, {0: outcome(10, 4, done=False)})]
    during = aggregate_progress(PLAN, running)
    assert (before.done, during.done) == (100, 100), "done never goes down between rounds"
    assert (during.items.succeeded, during.items.failed, during.items.retrying) == (94, 6, 6)


def test_earlier_rounds_final_failures_stay_in_the_summary() -> None:
    rounds = [
        RoundView(0, {0: outcome(50, 45, 5, 2), 1: outcome(50, 50)}, finished=True),
        RoundView(1, {0: outcome(2, 2)}, finished=True),
    ]
    p = aggregate_progress(PLAN, rounds)
    assert (p.items.succeeded, p.items.failed, p.items.retrying) == (97, 3, 0)
    assert [(e.code, e.count, e.retryable) for e in p.failure_summary] == [
        ("INVALID_ARGUMENT", 3, False)
    ]


def test_a_lost_last_report_is_replaced_by_the_pods_exit_summary() -> None:
    stale = report(0, 10, done=False)
    exits = {(0, 0): {"items": 50, "succeeded": 50, "failed": 0}}
    finished = job(Role.SHARDS, complete=True, completed=frozenset({0, 1}))
    d = step(step(None), *DONE, finished, stale, report(1, 50), exits)
    assert d.status.items is not None
    assert (d.status.items.succeeded, d.status.items.pending) == (100, 0)
    assert d.create and d.create[0]["metadata"]["labels"]["batchpredict.io/role"] == "finalize"
    assert d.status.round == 0, "nothing to retry: no needless round"


def test_counts_never_go_back_when_a_report_is_not_seen_yet() -> None:
    running = step(step(None), *DONE, job(Role.SHARDS, active=2), report(0, 30, done=False))
    restarted = step(running, *DONE, job(Role.SHARDS, active=2), at=timedelta(seconds=1))
    assert restarted.status.items is not None and restarted.status.items.succeeded == 30


def test_shards_waiting_for_triton_show_a_stalled_condition_naming_it() -> None:
    waiting = BatchPredictionShard.model_validate(
        {
            "spec": {"batchPrediction": "run", "runUid": "u-1", "round": 0, "shard": 0},
            "progress": {
                "itemsTotal": 50,
                "waitingReason": "TritonUnavailable",
                "message": "waiting for Triton at triton:8001 (grpc): UNAVAILABLE",
            },
        }
    )
    d = step(step(None), *DONE, job(Role.SHARDS, active=2), waiting)
    assert d.status.phase is Phase.RUNNING
    assert condition(d, ConditionType.STALLED) == "True"
    stalled = next(c for c in d.status.conditions if c.type == "Stalled")
    assert stalled.reason == "TritonUnavailable"
    assert "triton:8001" in stalled.message


def test_a_run_whose_shards_gave_up_on_triton_ends_with_that_reason() -> None:
    gave_up = BatchPredictionShard.model_validate(
        {
            "spec": {"batchPrediction": "run", "runUid": "u-1", "round": 0, "shard": 1},
            "progress": {
                "itemsTotal": 50,
                "waitingReason": "TritonUnavailable",
                "message": "Triton at triton:8001 is not reachable",
            },
        }
    )
    children = (*DONE, job(Role.SHARDS, failed=True), report(0, 50), gave_up)
    counted = finalized(50, 50, codes={"NOT_PROCESSED": 50})
    d = step(step(None), *children, job(Role.FINALIZE, complete=True), counted)
    assert d.status.phase is Phase.PARTIALLY_SUCCEEDED
    assert condition(d, ConditionType.COMPLETE) == "True"
    complete = next(c for c in d.status.conditions if c.type == "Complete")
    assert complete.reason == "TritonUnavailable"
    assert "triton:8001" in complete.message


def test_the_terminal_counts_are_the_files_counts() -> None:
    """Reports said 100 succeeded; the files hold 95 and 5 failures: the files win."""
    children = (
        *DONE,
        job(Role.SHARDS, complete=True),
        report(0, 50),
        report(1, 50),
        job(Role.FINALIZE, complete=True),
        finalized(95, 5),
    )
    d = step(step(None), *children)
    assert d.status.items is not None
    assert (d.status.items.succeeded, d.status.items.failed) == (95, 5)
    assert d.status.phase is Phase.PARTIALLY_SUCCEEDED


def test_a_finished_run_removes_its_reports_once_its_status_is_stored() -> None:
    children = (
        *DONE,
        job(Role.SHARDS, complete=True),
        report(0, 50),
        report(1, 50),
        job(Role.FINALIZE, complete=True),
        finalized(100),
    )
    done = step(step(None), *children)
    assert done.status.phase is Phase.SUCCEEDED
    assert done.delete_reports == [], "not before the terminal status is written"
    for r in children:
        if isinstance(r, BatchPredictionShard):
            r.metadata["name"] = f"run-s{r.spec.shard}"
    after = step(done, *children)
    assert sorted(after.delete_reports) == ["run-s0", "run-s1"]


def pod(role: Role, job_uid: str, index: int = 0, exit_code: int = 0) -> PodResult | None:
    return PodResult.from_pod(
        {
            "metadata": {
                "labels": {"batchpredict.io/role": role.value, "batchpredict.io/round": "0"},
                "annotations": {COMPLETION_INDEX: str(index)},
                "ownerReferences": [{"kind": "Job", "uid": job_uid, "controller": True}],
            },
            "status": {
                "containerStatuses": [
                    {
                        "name": "worker",
                        "state": {
                            "terminated": {
                                "exitCode": exit_code,
                                "message": '{"items": 50, "succeeded": 50, "failed": 0}',
                            }
                        },
                    }
                ]
            },
        },
        "worker",
    )


def test_only_pods_of_the_runs_own_jobs_count() -> None:
    shards = JobState(name="run-u-1-r0", role=Role.SHARDS, round=0, completions=2, uid="job-1")
    mine, foreign = pod(Role.SHARDS, "job-1", 1), pod(Role.SHARDS, "job-of-another-run", 0)
    assert mine is not None and foreign is not None
    observed = observe_run(T0, (shards,), (), (mine, foreign))
    assert set(observed.shard_results) == {(0, 1)}
    failed_plan = pod(Role.PLAN, "job-1", exit_code=3)
    assert observe_run(T0, (shards,), (), (failed_plan,)).plan is None  # wrong role for job-1


def test_plans_never_ask_for_more_shards_than_an_indexed_job_allows() -> None:
    spec = bp(itemsPerShard=1).spec
    assert plan_shards(10_000_000, spec).shards == MAX_SHARDS
    assert plan_shards(10, spec).shards == 10


def test_a_failed_plan_step_pod_outcome_is_kept() -> None:
    plan_job = JobState(name="p", role=Role.PLAN, round=0, completions=1, uid="job-p")
    failed = pod(Role.PLAN, "job-p", exit_code=5)
    observed = observe_run(T0, (plan_job,), (), (failed,) if failed else ())
    assert observed.plan == StepOutcome(
        succeeded=False, data={"items": 50, "succeeded": 50, "failed": 0}
    )


def test_a_spec_too_large_for_the_pods_is_refused_naming_the_field() -> None:
    body = bp().model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"]["worker"] = {"env": [{"name": f"V{n}", "value": "x" * 1000} for n in range(200)]}
    with pytest.raises(InvalidSpecError, match=r"spec\.worker is the largest field"):
        parse_batch_prediction(body)
