"""Lifecycle controls in the state machine: suspend, cancel, manual retry, deadline, TTL, cap,
Kueue queueing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from batchpredict.api.v1alpha1 import BatchPrediction
from batchpredict.api.v1alpha1.status import Phase
from batchpredict.reconcile.decision import Decision
from batchpredict.reconcile.naming import Role
from batchpredict.reconcile.observed import Observed
from batchpredict.reconcile.policy import admitted_runs
from batchpredict.reconcile.run import reconcile_run
from tests.unit.test_run import (
    CONFIG,
    PLANNED,
    SPEC,
    T0,
    Finalized,
    finalized,
    job,
    name,
    report,
    step,
)


def with_annotations(
    previous: Decision,
    annotations: dict[str, str],
    *observed: Any,
    at: timedelta = timedelta(seconds=5),
    **spec: Any,
) -> Decision:
    status = previous.status.model_dump(mode="json", by_alias=True)
    meta = {
        "name": "run",
        "namespace": "ml",
        "uid": "u-1",
        "generation": 1,
        "annotations": annotations,
    }
    bp = BatchPrediction.model_validate(
        {"metadata": meta, "spec": {**SPEC, **spec}, "status": status}
    )
    jobs = tuple(o for o in observed if not isinstance(o, type(PLANNED)) and hasattr(o, "role"))
    reports = tuple(o for o in observed if hasattr(o, "progress"))
    plan = next((o for o in observed if isinstance(o, type(PLANNED))), None)
    final = next((o.outcome for o in observed if isinstance(o, Finalized)), None)
    now = T0 + at
    return reconcile_run(
        bp, Observed(now=now, jobs=jobs, reports=reports, plan=plan, finalize=final), CONFIG
    )


RUNNING = (job(Role.PLAN, complete=True), PLANNED)


def test_suspend_patches_the_job_and_resume_unsuspends_it() -> None:
    running = step(step(None), *RUNNING, job(Role.SHARDS, active=2), report(0, 10, done=False))
    suspended = step(
        running, *RUNNING, job(Role.SHARDS, active=2), report(0, 10, done=False), suspend=True
    )
    assert suspended.status.phase is Phase.SUSPENDED
    assert suspended.patch_jobs == [("run-shards-0", {"spec": {"suspend": True}})]
    assert suspended.status.items is not None and suspended.status.items.succeeded == 10
    resumed = step(suspended, *RUNNING, job(Role.SHARDS, suspended=True), report(0, 10, done=False))
    assert resumed.status.phase is Phase.RUNNING
    assert resumed.patch_jobs == [("run-shards-0", {"spec": {"suspend": False}})]


def test_a_run_created_suspended_starts_nothing() -> None:
    d = step(None, suspend=True)
    assert d.status.phase is Phase.SUSPENDED
    assert d.create == []


def test_parallelism_changes_reach_the_running_job() -> None:
    d = step(step(None), *RUNNING, job(Role.SHARDS, active=2), parallelism=1)
    assert ("run-shards-0", {"spec": {"parallelism": 1}}) in d.patch_jobs


def test_cancel_stops_the_pods_then_counts_the_files() -> None:
    running = step(step(None), *RUNNING, job(Role.SHARDS, active=2), report(0, 10, done=False))
    cancel = {"batchpredict.io/cancel": "true"}
    stopping = with_annotations(
        running, cancel, *RUNNING, job(Role.SHARDS, active=2), report(0, 10, done=False)
    )
    assert ("run-shards-0", {"spec": {"suspend": True}}) in stopping.patch_jobs
    assert stopping.status.phase is Phase.RUNNING, "not finished while pods may still commit"
    assert stopping.create == []
    stopped = (*RUNNING, job(Role.SHARDS, suspended=True), report(0, 10, done=False))
    counting = with_annotations(stopping, cancel, *stopped)
    assert [j["metadata"]["name"] for j in counting.create] == [name("finalize")]
    assert counting.patch_jobs == [], "the finalize Job is never suspended"
    counted = finalized(10, 90, codes={"NOT_PROCESSED": 90})
    cancelled = with_annotations(
        counting, cancel, *stopped, job(Role.FINALIZE, complete=True), counted
    )
    assert cancelled.status.phase is Phase.CANCELLED
    items = cancelled.status.items
    assert items is not None
    assert (items.succeeded, items.failed, items.pending, items.retrying) == (10, 90, 0, 0)
    assert cancelled.status.completion_time is not None


def test_manual_retry_redoes_every_failed_item_once() -> None:
    children = (
        *RUNNING,
        job(Role.SHARDS, complete=True),
        report(0, 48, 2),
        report(1, 50),
        job(Role.FINALIZE, complete=True),
        finalized(98, 2),
    )
    partial = step(step(None), *children)
    assert partial.status.phase is Phase.PARTIALLY_SUCCEEDED
    retry = with_annotations(partial, {"batchpredict.io/retry": "1"}, *children)
    assert retry.status.phase is Phase.RUNNING
    (created,) = retry.create
    assert created["metadata"]["name"] == name("r1")
    request = created["metadata"]["annotations"]["batchpredict.io/retry-request"]
    assert {"name": "BATCHPREDICT_REDO", "value": "all"} in created["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    assert retry.status.last_retry_request == "1"
    again = with_annotations(retry, {"batchpredict.io/retry": "1"}, *children)
    assert again.create == [], "the same annotation value retries once"
    retry_job = job(
        Role.SHARDS, 1, retry_request=request, succeeded_before=98, failed_before=2, active=1
    )
    lost_patch = with_annotations(partial, {"batchpredict.io/retry": "1"}, *children, retry_job)
    assert lost_patch.create == [], "a lost status patch never starts a second round"
    assert lost_patch.status.round == 1
    done_job = job(
        Role.SHARDS, 1, retry_request=request, succeeded_before=98, failed_before=2, complete=True
    )
    first = children[:3]  # the earlier round's reports are gone once the run had finished
    midway = with_annotations(again, {"batchpredict.io/retry": "1"}, *first, retry_job)
    assert midway.status.items is not None
    assert (midway.status.items.succeeded, midway.status.items.failed) == (98, 2)
    fixed = (*first, done_job, report(0, 2, round_=1))
    finalizing = with_annotations(again, {"batchpredict.io/retry": "1"}, *fixed)
    assert [j["metadata"]["name"] for j in finalizing.create] == [name("finalize-r1")]
    done = with_annotations(
        finalizing,
        {"batchpredict.io/retry": "1"},
        *fixed,
        job(Role.FINALIZE, 1, complete=True),
        finalized(100),
    )
    assert done.status.phase is Phase.SUCCEEDED
    assert done.status.items is not None
    assert (done.status.items.succeeded, done.status.items.failed) == (100, 0)


def test_a_retry_of_some_codes_redoes_those_and_keeps_the_others_failed() -> None:
    codes = {"INVALID_ARGUMENT": 3, "UNREADABLE_ITEM": 2}
    children = (
        *RUNNING,
        job(Role.SHARDS, complete=True),
        report(0, 47, 3),
        report(1, 48, 2),
        job(Role.FINALIZE, complete=True),
        finalized(95, 5, codes=codes),
    )
    partial = step(step(None), *children)
    asked = {"batchpredict.io/retry": "1", "batchpredict.io/retry-codes": "INVALID_ARGUMENT"}
    retry = with_annotations(partial, asked, *children)
    (created,) = retry.create
    env = created["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "BATCHPREDICT_REDO_CODES", "value": "INVALID_ARGUMENT"} in env
    annotations = created["metadata"]["annotations"]
    assert annotations["batchpredict.io/failed-before"] == "3"
    assert annotations["batchpredict.io/kept-before"] == '{"UNREADABLE_ITEM": 2}'
    assert (
        retry.status.message
        == "retrying 3 failed items (INVALID_ARGUMENT) in round 1 (manual retry)"
    )
    retry_job = job(
        Role.SHARDS,
        1,
        retry_request=annotations["batchpredict.io/retry-request"],
        succeeded_before=95,
        failed_before=3,
        kept_before={"UNREADABLE_ITEM": 2},
        active=1,
    )
    midway = with_annotations(retry, asked, *children[:2], retry_job, report(0, 2, round_=1))
    assert midway.status.items is not None
    assert (midway.status.items.succeeded, midway.status.items.failed) == (97, 3)
    summary = {e.code: e.count for e in midway.status.failure_summary}
    assert summary["UNREADABLE_ITEM"] == 2, "the kept failures still show by code"
    nothing = {"batchpredict.io/retry": "2", "batchpredict.io/retry-codes": "NOT_FOUND"}
    refused = with_annotations(partial, nothing, *children)
    assert refused.create == []
    assert [e.reason for e in refused.events] == ["NothingToRetry"]
    assert "no failed items of codes NOT_FOUND" in refused.events[0].message


def test_deadline_fails_the_run_and_stops_its_jobs() -> None:
    running = step(step(None), *RUNNING, job(Role.SHARDS, active=2), activeDeadlineSeconds=60)
    late = step(
        running,
        *RUNNING,
        job(Role.SHARDS, active=2),
        at=timedelta(seconds=61),
        activeDeadlineSeconds=60,
    )
    assert late.patch_jobs
    stopped = (*RUNNING, job(Role.SHARDS, suspended=True))
    ended = step(
        late,
        *stopped,
        job(Role.FINALIZE, complete=True),
        finalized(0, 100, codes={"NOT_PROCESSED": 100}),
        at=timedelta(seconds=62),
        activeDeadlineSeconds=60,
    )
    assert ended.status.phase is Phase.FAILED
    assert "activeDeadlineSeconds" in (ended.status.message or "")
    assert ended.status.items is not None and ended.status.items.pending == 0


def test_a_manual_retry_after_the_deadline_gets_a_window_of_its_own() -> None:
    deadline = {"activeDeadlineSeconds": 60}
    stopped = (*RUNNING, job(Role.SHARDS, suspended=True))
    timed_out = step(
        step(step(None), *RUNNING, job(Role.SHARDS, active=2), **deadline),
        *stopped,
        job(Role.FINALIZE, complete=True),
        finalized(40, 60, codes={"NOT_PROCESSED": 60}),
        at=timedelta(seconds=62),
        **deadline,
    )
    assert timed_out.status.phase is Phase.FAILED
    retry = {"batchpredict.io/retry": "after-deadline"}
    at = timedelta(minutes=10)  # long after the first window closed
    retried = with_annotations(timed_out, retry, *stopped, at=at, **deadline)
    assert retried.status.phase is Phase.RUNNING
    assert [j["metadata"]["name"] for j in retried.create] == [name("r1")]
    assert retried.status.retry_start_time == T0 + at
    request = retried.create[0]["metadata"]["annotations"]["batchpredict.io/retry-request"]
    retry_round = job(
        Role.SHARDS, 1, retry_request=request, succeeded_before=40, failed_before=60, active=2
    )
    within = with_annotations(
        retried, retry, *stopped, retry_round, at=at + timedelta(seconds=59), **deadline
    )
    assert within.status.phase is Phase.RUNNING, within.status.message
    assert within.patch_jobs == [], "no Job is stopped inside the retry's own window"
    late = with_annotations(
        within, retry, *stopped, retry_round, at=at + timedelta(seconds=61), **deadline
    )
    assert ("run-shards-1", {"spec": {"suspend": True}}) in late.patch_jobs
    assert "activeDeadlineSeconds" in (late.status.message or "")


def test_ttl_deletes_a_finished_run() -> None:
    children = (
        *RUNNING,
        job(Role.SHARDS, complete=True),
        report(0, 50),
        report(1, 50),
        job(Role.FINALIZE, complete=True),
        finalized(100),
    )
    done = step(step(None, ttlSecondsAfterFinished=30), *children, ttlSecondsAfterFinished=30)
    assert done.status.phase is Phase.SUCCEEDED
    assert not step(
        done, *children, at=timedelta(seconds=10), ttlSecondsAfterFinished=30
    ).delete_self
    assert step(done, *children, at=timedelta(seconds=31), ttlSecondsAfterFinished=30).delete_self


def test_cap_queues_runs_fifo() -> None:
    waiting = [("2026-11-23T10:00:02Z", "c"), ("2026-11-23T10:00:01Z", "b")]
    assert admitted_runs(waiting, holding=1, max_running=2) == {"b"}
    assert admitted_runs(waiting, holding=2, max_running=2) == set()
    assert admitted_runs(waiting, holding=0, max_running=None) == {"b", "c"}
    queued = reconcile_run(
        BatchPrediction.model_validate(
            {"metadata": {"name": "run", "namespace": "ml", "uid": "u"}, "spec": SPEC}
        ),
        Observed(now=T0),
        CONFIG.model_copy(update={"max_running": 2}),
        admitted=False,
    )
    assert queued.status.phase is Phase.QUEUED
    assert queued.create == []
    assert "maxRunning" in (queued.status.message or "")


def test_kueue_runs_are_queued_until_their_job_is_unsuspended() -> None:
    planned = step(step(None, queueName="gpu"), *RUNNING, queueName="gpu")
    assert planned.create[0]["spec"]["suspend"] is True
    queued = step(planned, *RUNNING, job(Role.SHARDS, suspended=True), queueName="gpu")
    assert queued.status.phase is Phase.QUEUED
    assert queued.patch_jobs == [], "Kueue owns suspend of a queued Job"
    admitted = step(queued, *RUNNING, job(Role.SHARDS, active=1), queueName="gpu")
    assert admitted.status.phase is Phase.RUNNING


def test_started_by_is_recorded_once_and_unverified_without_the_admission_policy() -> None:
    alice = {"batchpredict.io/started-by": "alice@example.com"}
    d = with_annotations(step(None), alice)
    assert d.status.started_by == "alice@example.com (unverified)"
    # An annotation rewritten later (`kubectl annotate --overwrite`) never changes the record.
    later = with_annotations(d, {"batchpredict.io/started-by": "mallory"})
    assert later.status.started_by == "alice@example.com (unverified)"
    assert with_annotations(step(None), {}).status.started_by is None
