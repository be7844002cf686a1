"""The run's state machine: from (spec, children, reports, previous status) to the new status,
the Jobs to create or patch and the Events to post. Pure: the handler does the I/O."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from batchpredict.api.v1alpha1 import BatchPrediction
from batchpredict.api.v1alpha1.status import (
    TERMINAL_PHASES,
    BatchPredictionStatus,
    ChildJob,
    ConditionStatus,
    ConditionType,
    Phase,
    ShardCounts,
)
from batchpredict.controller.config import OperatorConfig
from batchpredict.reconcile.conditions import set_condition
from batchpredict.reconcile.decision import Decision, Event, output_locations, transition_events
from batchpredict.reconcile.jobs import Owner, build_step_job, build_worker_job
from batchpredict.reconcile.naming import (
    ANNOTATION_CANCEL,
    ANNOTATION_RETRY,
    Role,
)
from batchpredict.reconcile.observed import JobState, Observed
from batchpredict.reconcile.policy import retry_delay, terminal_phase
from batchpredict.reconcile.progress import (
    Progress,
    aggregate_progress,
    average_speed,
    eta,
    percent,
)
from batchpredict.reconcile.tenancy import started_by

MODEL_REASONS = {"ModelNotFound", "ModelNotReady"}
# How long a completed plan Job may go without its pod's result showing in the pod index.
PLAN_RESULT_GRACE = timedelta(seconds=60)
T, F, U = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


class _Run:
    """One reconcile of one BatchPrediction; builds up a Decision."""

    def __init__(
        self, bp: BatchPrediction, observed: Observed, config: OperatorConfig, admitted: bool
    ) -> None:
        meta = bp.metadata
        self.spec = bp.spec
        self.annotations: dict[str, str] = meta.get("annotations") or {}
        self.observed = observed
        self.config = config
        self.admitted = admitted
        self.now = observed.now
        self.generation = meta.get("generation")
        self.owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        self.previous = bp.status or BatchPredictionStatus()
        self.status = self.previous.model_copy(
            update={
                "observed_generation": self.generation,
                "message": None,
                "started_by": started_by(
                    self.previous.started_by,
                    self.annotations,
                    verified=config.started_by_verified,
                ),
            }
        )
        self.decision = Decision(status=self.status)

    # -- helpers -------------------------------------------------------------------------
    def set(self, **changes: Any) -> None:
        self.status = self.status.model_copy(update=changes)

    def condition(
        self, type_: ConditionType, value: ConditionStatus, reason: str, msg: str
    ) -> None:
        conditions = set_condition(
            list(self.status.conditions),
            type_,
            value,
            reason,
            msg,
            now=self.now,
            generation=self.generation,
        )
        self.set(conditions=conditions)

    def create(self, job: dict[str, Any]) -> None:
        self.decision.create.append(job)

    def stop_jobs(self) -> None:
        """Suspend every unfinished Job: the Job controller stops its pods, outputs stay."""
        for job in self.observed.jobs:
            if not job.finished and not job.suspended:
                self.decision.patch_jobs.append((job.name, {"spec": {"suspend": True}}))

    # -- the steps ------------------------------------------------------------------------
    def decide(self) -> Decision:
        if self.previous.phase in TERMINAL_PHASES:
            return self.finished_run()
        if self.annotations.get(ANNOTATION_CANCEL, "").lower() == "true":
            self.stop_jobs()
            self.finish(
                Phase.CANCELLED,
                "Cancelled",
                "cancelled by the batchpredict.io/cancel "
                "annotation; finished items are kept in the output",
            )
            return self.done()
        if self.deadline_exceeded():
            self.stop_jobs()
            self.finish(
                Phase.FAILED,
                "DeadlineExceeded",
                f"the run took longer than "
                f"activeDeadlineSeconds ({self.spec.active_deadline_seconds}s)",
            )
            return self.done()
        self.set(output=output_locations(self.spec))
        plan = self.observed.job(Role.PLAN)
        if plan is None and self.spec.suspend:
            self.suspended()
        elif plan is None and not self.admitted:
            self.queued(
                "WaitingForSlot",
                f"waiting for a slot: at most {self.config.max_running}"
                " runs run at once (operator maxRunning)",
            )
        elif plan is None:
            self.create(build_step_job(self.owner, self.spec, self.config, Role.PLAN))
            self.pending()
        elif plan.failed:
            self.plan_failed(plan)
        elif self.plan_totals() is None and self.plan_result_lost(plan):
            self.finish(
                Phase.FAILED,
                "PlanResultMissing",
                "the plan pod finished without its "
                f"totals in its termination message; see `kubectl logs job/{plan.name}`",
            )
        elif not plan.complete or self.plan_totals() is None:
            self.pending()
        else:
            self.rounds()
        return self.done()

    def done(self) -> Decision:
        self.decision.status = self.status
        self.decision.events += transition_events(self.previous, self.status)
        return self.decision

    def finished_run(self) -> Decision:
        """A finished run changes only through a manual retry or its TTL."""
        request = self.annotations.get(ANNOTATION_RETRY)
        if request and request != self.previous.last_retry_request:
            return self.manual_retry(request)
        ttl = self.spec.ttl_seconds_after_finished
        ended = self.previous.completion_time
        if ttl is not None and ended is not None and self.now >= ended + timedelta(seconds=ttl):
            return Decision(status=self.previous, delete_self=True)
        return Decision(status=self.previous)

    def manual_retry(self, request: str) -> Decision:
        self.set(last_retry_request=request)
        items = self.previous.items
        totals = self.plan_totals()
        if items is None or not items.failed or totals is None:
            event = Event("Normal", "NothingToRetry", "the run has no failed items to retry")
            self.decision.events.append(event)
            self.decision.status = self.status
            return self.decision
        round_ = max(self.observed.rounds(), default=0) + 1
        self.create(
            build_worker_job(
                self.owner, self.spec, self.config, shards=totals[1], round_=round_, redo_all=True
            )
        )
        message = f"retrying {items.failed} failed items in round {round_} (manual retry)"
        self.set(phase=Phase.RUNNING, round=round_, completion_time=None, message=message)
        self.condition(ConditionType.PROGRESSING, T, "ManualRetry", message)
        self.condition(ConditionType.COMPLETE, F, "ManualRetry", message)
        self.condition(ConditionType.FAILED, F, "ManualRetry", message)
        self.decision.events.append(Event("Normal", "ManualRetry", message))
        self.decision.status = self.status
        return self.decision

    def deadline_exceeded(self) -> bool:
        limit, start = self.spec.active_deadline_seconds, self.status.start_time
        return (
            limit is not None and start is not None and self.now > start + timedelta(seconds=limit)
        )

    def pending(self) -> None:
        message = "counting the dataset and checking the model"
        if self.status.start_time is None:
            self.set(start_time=self.now)
        self.set(phase=Phase.PENDING, message=message)
        self.condition(ConditionType.PROGRESSING, T, "Planning", message)
        self.condition(ConditionType.MODEL_READY, U, "Planning", "the plan step checks the model")

    def queued(self, reason: str, message: str) -> None:
        self.set(phase=Phase.QUEUED, message=message)
        self.condition(ConditionType.PROGRESSING, F, reason, message)

    def suspended(self) -> None:
        message = "spec.suspend is true; set it to false to resume"
        self.set(phase=Phase.SUSPENDED, message=message, eta=None, items_per_second=None)
        self.condition(ConditionType.PROGRESSING, F, "Suspended", message)
        self.condition(ConditionType.STALLED, F, "Suspended", message)

    def plan_totals(self) -> tuple[int, int] | None:
        """(items, shards) from the plan pod, or from status once recorded there."""
        outcome = self.observed.plan
        if outcome is not None and outcome.succeeded and "total" in outcome.data:
            return int(outcome.data["total"]), int(outcome.data["shards"])
        items, shards = self.previous.items, self.previous.shards
        if items is not None and items.total is not None and shards is not None and shards.total:
            return items.total, shards.total
        return None

    def plan_result_lost(self, plan: JobState) -> bool:
        """The plan Job completed a while ago but no pod told its result (pods deleted)."""
        ended = plan.completion_time
        return plan.complete and ended is not None and self.now > ended + PLAN_RESULT_GRACE

    def plan_failed(self, plan: JobState) -> None:
        outcome = self.observed.plan
        reason = outcome.reason if outcome and not outcome.succeeded else "PlanFailed"
        message = (outcome.message if outcome else "") or plan.failure_message
        message = message or f"the plan step failed; see `kubectl logs job/{plan.name}`"
        if reason in MODEL_REASONS:
            self.condition(ConditionType.MODEL_READY, F, reason, message)
        self.finish(Phase.FAILED, reason, message)

    def rounds(self) -> None:
        totals = self.plan_totals()
        if totals is None:
            raise ValueError("rounds() needs the plan's totals")
        total, shards = totals
        self.condition(ConditionType.MODEL_READY, T, "ModelReady", "the plan step found the model")
        rounds = self.observed.rounds()
        # status.round moves on only after the next round's Job was created: until the index
        # shows that Job, the run waits for it instead of judging the previous round again.
        current = max(rounds[-1] if rounds else 0, self.previous.round)
        job = self.observed.job(Role.SHARDS, current)
        if job is None and current == 0:
            job_spec = build_worker_job(self.owner, self.spec, self.config, shards=shards, round_=0)
            self.create(job_spec)
        elif job is not None:
            self.follow_spec(job, shards)
        jobs = [
            ChildJob(name=j.name, round=j.round)
            for j in self.observed.jobs
            if j.role is Role.SHARDS
        ]
        self.set(round=current, jobs=jobs)
        finished = job is not None and job.finished
        progress = aggregate_progress(
            total,
            {r: self.observed.round_reports(r) for r in sorted({*rounds, current})},
            last_round=current,
            last_round_finished=finished,
            unreported_failed=self.unreported_items(job, total, shards) if finished and job else 0,
            failed_items_limit=self.config.failed_items_limit,
            redo_all_rounds=frozenset(j.round for j in self.observed.jobs if j.redo_all),
        )
        self.record_progress(progress, shards, job)
        if job is None or not job.finished:
            self.unfinished_round(job)
        elif progress.retryable and current < self.spec.retry.max_rounds:
            self.retrying(job, progress, shards, current)
        else:
            self.finalize(progress, total, current)

    def follow_spec(self, job: JobState, shards: int) -> None:
        """Suspend and parallelism may change while a run goes on; the Job follows them.
        Kueue owns `suspend` of a queued run's Job."""
        if job.finished:
            return
        changes: dict[str, Any] = {}
        if self.spec.queue_name is None and job.suspended != self.spec.suspend:
            changes["suspend"] = self.spec.suspend
        if job.parallelism != min(self.spec.parallelism, shards):
            changes["parallelism"] = min(self.spec.parallelism, shards)
        if changes:
            self.decision.patch_jobs.append((job.name, {"spec": changes}))

    def unreported_items(self, job: JobState, total: int, shards: int) -> int:
        """Items of shards that ended without a final report (their pods broke for good)."""
        if job.round > 0:
            return 0  # a retry round only redoes ids the previous round recorded
        reports = {r.spec.shard: r for r in self.observed.round_reports(job.round)}
        missing = 0
        for shard in range(shards):
            report = reports.get(shard)
            if report is None or not report.progress.finished:
                size = (shard + 1) * total // shards - shard * total // shards
                done = report.progress.succeeded + report.progress.failed if report else 0
                missing += max(size - done, 0)
        return missing

    def record_progress(self, progress: Progress, shards: int, job: JobState | None) -> None:
        done_before = 0
        if self.previous.items is not None:
            done_before = self.previous.items.succeeded + self.previous.items.failed
        if progress.done != done_before or self.status.last_progress_time is None:
            self.set(last_progress_time=self.now)
        speed = progress.items_per_second
        self.set(
            items=progress.items,
            progress=percent(progress.done, progress.items.total),
            items_per_second=speed,
            eta=eta(progress.items.pending, speed),
            failed_items=progress.failed_items,
            failure_summary=progress.failure_summary,
            shards=ShardCounts(
                total=shards,
                active=job.active if job else 0,
                succeeded=job.completed_indexes if job else 0,
                failed=job.failed_indexes if job else 0,
            ),
        )

    def unfinished_round(self, job: JobState | None) -> None:
        if self.spec.suspend:
            self.suspended()
            return
        if job is not None and job.suspended and self.spec.queue_name:
            self.queued(
                "WaitingForKueue",
                f"the Job waits for Kueue to admit it from queue {self.spec.queue_name}",
            )
            return
        message = "worker pods are scoring the shards"
        self.set(phase=Phase.RUNNING, next_retry_time=None, message=message)
        self.condition(ConditionType.PROGRESSING, T, "Running", message)
        last = self.status.last_progress_time or self.now
        idle = (self.now - last).total_seconds()
        if job is not None and idle > self.spec.stall_timeout_seconds:
            self.condition(
                ConditionType.STALLED,
                T,
                "NoProgress",
                f"no item finished for {int(idle)}s (stallTimeoutSeconds "
                f"{self.spec.stall_timeout_seconds}); check the worker pods and Triton",
            )
        else:
            self.condition(ConditionType.STALLED, F, "Progressing", "items are finishing")

    def retrying(self, job: JobState, progress: Progress, shards: int, current: int) -> None:
        ended = job.completion_time or self.now
        delay = retry_delay(self.spec.retry.backoff, current, f"{self.owner.uid}/{current}")
        at = self.status.next_retry_time or (ended + timedelta(seconds=delay))
        message = f"{progress.retryable} failed items will be retried in round {current + 1}"
        if self.now >= at:
            self.create(
                build_worker_job(
                    self.owner, self.spec, self.config, shards=shards, round_=current + 1
                )
            )
            self.set(phase=Phase.RUNNING, round=current + 1, next_retry_time=None)
            self.condition(ConditionType.PROGRESSING, T, "Running", message)
            return
        self.set(phase=Phase.RETRYING, next_retry_time=at, message=f"{message} at {at:%H:%M:%S}")
        self.condition(ConditionType.PROGRESSING, T, "Retrying", message)

    def finalize(self, progress: Progress, total: int, round_: int) -> None:
        step = self.observed.job(Role.FINALIZE, round_)
        if step is None:
            self.create(build_step_job(self.owner, self.spec, self.config, Role.FINALIZE, round_))
        if step is None or not step.finished:
            message = "writing the manifest"
            self.set(phase=Phase.RUNNING, message=message, next_retry_time=None)
            self.condition(ConditionType.PROGRESSING, T, "Finalizing", message)
            return
        if step.failed:
            outcome = self.observed.finalize
            detail = outcome.message if outcome else step.failure_message
            self.finish(Phase.FAILED, "FinalizeFailed", f"the finalize step failed: {detail}")
            return
        phase = terminal_phase(self.spec, progress.items.failed, total)
        counts = f"{progress.items.succeeded} of {total} items succeeded"
        if progress.items.failed:
            counts += f", {progress.items.failed} failed"
        self.set(
            items=progress.items.model_copy(update={"retrying": 0}),
            items_per_second=average_speed(progress.done, self.status.start_time, self.now),
        )
        self.finish(phase, phase.value, counts)

    def finish(self, phase: Phase, reason: str, message: str) -> None:
        self.set(phase=phase, message=message, completion_time=self.now, next_retry_time=None)
        self.set(eta=None)
        self.condition(ConditionType.PROGRESSING, F, reason, message)
        self.condition(ConditionType.STALLED, F, reason, "the run has ended")
        done = phase in {Phase.SUCCEEDED, Phase.PARTIALLY_SUCCEEDED}
        self.condition(ConditionType.COMPLETE, T if done else F, reason, message)
        self.condition(ConditionType.FAILED, F if done else T, reason, message)


def reconcile_run(
    bp: BatchPrediction, observed: Observed, config: OperatorConfig, *, admitted: bool = True
) -> Decision:
    """Decide the new status and the children to create for one BatchPrediction.
    `admitted`: false while the operator's cap on running runs keeps this one queued."""
    return _Run(bp, observed, config, admitted).decide()
