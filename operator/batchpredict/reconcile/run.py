"""The run's state machine: from (spec, children, reports, previous status) to the new status,
the Jobs to create or patch and the Events to post. Pure: the handler does the I/O."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from batchpredict.api.v1alpha1 import BatchPrediction
from batchpredict.api.v1alpha1.status import (
    TERMINAL_PHASES,
    BatchPredictionStatus,
    ChildJob,
    ConditionStatus,
    ConditionType,
    EvaluationState,
    Phase,
    ShardCounts,
)
from batchpredict.controller.config import OperatorConfig
from batchpredict.planning import ShardPlan
from batchpredict.reconcile.conditions import set_condition
from batchpredict.reconcile.decision import Decision, Event, output_locations, transition_events
from batchpredict.reconcile.evaluation import evaluating, evaluation_failed, evaluation_status
from batchpredict.reconcile.jobs import ManualRetry, Owner, build_step_job, build_worker_job
from batchpredict.reconcile.kueue import waiting_message
from batchpredict.reconcile.naming import (
    ANNOTATION_CANCEL,
    ANNOTATION_RETRY,
    ANNOTATION_RETRY_CODES,
    Role,
)
from batchpredict.reconcile.observed import JobState, Observed
from batchpredict.reconcile.policy import deadline_passed, retry_delay, terminal_phase
from batchpredict.reconcile.pools import REASON_UNKNOWN_NODE_POOL, unknown_node_pool
from batchpredict.reconcile.progress import (
    NOT_PROCESSED,
    Baseline,
    Progress,
    RoundView,
    aggregate_progress,
    average_speed,
    best_outcome,
    eta,
    final_progress,
    percent,
    progress_text,
)
from batchpredict.reconcile.tenancy import started_by
from batchpredict.worker.exit_codes import REASON_TRITON_UNAVAILABLE

MODEL_REASONS = {"ModelNotFound", "ModelNotReady", REASON_TRITON_UNAVAILABLE}
# How long a completed plan or finalize Job may go without its pod's result in the pod index.
STEP_RESULT_GRACE = timedelta(seconds=60)
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

    @property
    def may_run(self) -> bool:
        """Whether the run's shard pods may run now: not suspended, and holding one of the
        operator's `maxRunning` slots (a resumed run queues for one again)."""
        return self.admitted and not self.spec.suspend

    def stop_jobs(self) -> None:
        """Suspend every unfinished plan and shard Job: the Job controller stops their pods,
        outputs stay (a finalize step counts them). Kueue owns a queued Job's suspend: its
        Workload is deactivated instead, and Kueue suspends the Job."""
        for job in self.observed.jobs:
            if job.role is Role.FINALIZE or job.finished:
                continue
            if job.role is Role.SHARDS and self.spec.queue_name:
                self.set_workload_active(job, active=False)
            elif not job.suspended:
                self.decision.patch_jobs.append((job.name, {"spec": {"suspend": True}}))

    def set_workload_active(self, job: JobState, *, active: bool) -> None:
        """Deactivate (Kueue evicts it and suspends the Job) or reactivate (back in its
        queue) the Workload of a queued Job, once Kueue has made it."""
        workload = self.observed.workload(job)
        if workload is not None and not workload.finished and workload.active != active:
            self.decision.patch_workloads.append((workload.name, {"spec": {"active": active}}))

    # -- the steps ------------------------------------------------------------------------
    def decide(self) -> Decision:
        if self.previous.phase in TERMINAL_PHASES:
            return self.finished_run()
        if self.annotations.get(ANNOTATION_CANCEL, "").lower() == "true":
            self.wind_down(
                Phase.CANCELLED,
                "Cancelled",
                "cancelled by the batchpredict.io/cancel annotation; finished items are kept "
                "in the output, the others are recorded as NOT_PROCESSED",
            )
            return self.done()
        unknown_pool = unknown_node_pool(self.spec, self.config)
        if unknown_pool is not None:
            # Fails at once before anything started; a pool gone from the operator's config
            # mid-run stops the pods and counts what is done, rather than placing the next
            # Job anywhere.
            self.wind_down(Phase.FAILED, REASON_UNKNOWN_NODE_POOL, unknown_pool)
            return self.done()
        if deadline_passed(self.spec, self.status, self.now):
            self.wind_down(
                Phase.FAILED,
                "DeadlineExceeded",
                f"the run took longer than activeDeadlineSeconds "
                f"({self.spec.active_deadline_seconds}s)",
            )
            return self.done()
        self.set(output=output_locations(self.spec))
        plan = self.observed.job(Role.PLAN)
        if plan is None and self.spec.suspend:
            self.suspended()
        elif plan is None and not self.admitted:
            self.wait_for_slot()
        elif plan is None:
            self.create(build_step_job(self.owner, self.spec, self.config, Role.PLAN))
            self.pending()
        elif plan.failed:
            self.plan_failed(plan)
        elif self.plan_totals() is None and self.result_lost(plan):
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
            unknown_pool = unknown_node_pool(self.spec, self.config)
            if unknown_pool is None:
                return self.manual_retry(request)
            self.set(last_retry_request=request)
            event = Event("Warning", REASON_UNKNOWN_NODE_POOL, f"not retried: {unknown_pool}")
            return Decision(status=self.status, events=[event])
        if self.revalidation_due():
            return self.revalidate()
        # The terminal counts are in status (a finished run was read back): its reports go.
        reports = [str(r.metadata.get("name")) for r in self.observed.reports]
        ttl = self.spec.ttl_seconds_after_finished
        ended = self.previous.completion_time
        if ttl is not None and ended is not None and self.now >= ended + timedelta(seconds=ttl):
            return Decision(status=self.previous, delete_self=True)
        return Decision(status=self.previous, delete_reports=reports)

    def revalidation_due(self) -> bool:
        """spec.evaluation differs from what status.evaluation measured (set or edited after
        the run ended), or its evaluate Job is under way, and the run has outputs to measure."""
        wanted, measured = self.spec.evaluation, self.previous.evaluation
        if wanted is None:
            return False
        if (
            measured is not None
            and measured.spec_key == wanted.key()
            and measured.state is not EvaluationState.EVALUATING
        ):
            return False
        items = self.previous.items
        return items is not None and items.total is not None

    def revalidate(self) -> Decision:
        """Measure the finished run again from its files (an evaluate Job per evaluation
        spec): the phase, counts and predictions stay; only status.evaluation changes."""
        if self.spec.evaluation is None:
            raise ValueError("revalidate() needs spec.evaluation")
        self.status = self.previous.model_copy(update={"observed_generation": self.generation})
        key = self.spec.evaluation.key()
        job = self.observed.evaluate_job(key)
        outcome = self.observed.evaluations.get(key)
        message = "re-validating the run's predictions against spec.evaluation's labels"
        if job is None:
            self.create(build_step_job(self.owner, self.spec, self.config, Role.EVALUATE))
            self.decision.events.append(Event("Normal", "Revalidating", message))
            self.set(evaluation=evaluating(key, message))
        elif outcome is not None and outcome.succeeded:
            measured = evaluation_status(outcome.data) or evaluation_failed(
                key, "the evaluate pod left no evaluation summary"
            )
            self.set(evaluation=measured)
            detail = measured.summary or measured.message or ""
            self.decision.events.append(Event("Normal", "Revalidated", detail))
        elif job.failed or self.result_lost(job):
            detail = (outcome.message if outcome else "") or job.failure_message
            message = f"the evaluate step failed: {detail}; see `kubectl logs job/{job.name}`"
            self.set(evaluation=evaluation_failed(key, message))
            self.decision.events.append(Event("Warning", "RevalidationFailed", message))
        else:
            self.set(evaluation=evaluating(key, message))
        self.decision.status = self.status
        return self.decision

    def manual_retry(self, request: str) -> Decision:
        """Redo the final failures (every one, or those of the retry-codes annotation) in a new
        round. The round's Job records the request, so a reconcile that lost the status patch
        finds it instead of starting a second round."""
        self.set(last_retry_request=request)
        request_id = hashlib.sha256(request.encode()).hexdigest()[:16]
        items, totals = self.previous.items, self.plan_totals()
        codes = retry_codes(self.annotations.get(ANNOTATION_RETRY_CODES))
        redo, kept = self.split_failures(codes)
        existing = [j for j in self.observed.jobs if j.retry_request == request_id]
        if existing:
            round_, redo = existing[0].round, existing[0].failed_before
        elif items is None or not redo or totals is None:
            which = f" of codes {', '.join(codes)}" if codes else ""
            message = f"the run has no failed items{which} to retry"
            self.decision.events.append(Event("Normal", "NothingToRetry", message))
            self.decision.status = self.status
            return self.decision
        else:
            round_ = max(self.observed.rounds(), default=0) + 1
            retry = ManualRetry(request_id, items.succeeded, redo, codes, kept)
            job = build_worker_job(
                self.owner, self.spec, self.config, shards=totals.shards, round_=round_, retry=retry
            )
            self.create(job)
        which = f" ({', '.join(codes)})" if codes else ""
        message = f"retrying {redo} failed items{which} in round {round_} (manual retry)"
        self.set(
            phase=Phase.RUNNING,
            round=round_,
            completion_time=None,
            message=message,
            start_time=self.previous.start_time or self.now,
            retry_start_time=self.now,  # the retry's own activeDeadlineSeconds window
        )
        self.condition(ConditionType.PROGRESSING, T, "ManualRetry", message)
        self.condition(ConditionType.COMPLETE, F, "ManualRetry", message)
        self.condition(ConditionType.FAILED, F, "ManualRetry", message)
        self.decision.events.append(Event("Normal", "ManualRetry", message))
        self.decision.status = self.status
        return self.decision

    def split_failures(self, codes: tuple[str, ...]) -> tuple[int, dict[str, int]]:
        """(the final failures a retry of `codes` redoes, {code: n} of those it leaves) from
        the finished run's failure summary; items never processed are always redone."""
        items = self.previous.items
        failed = items.failed if items else 0
        if not codes:
            return failed, {}
        kept = {
            e.code: e.count
            for e in self.previous.failure_summary
            if e.code not in codes and e.code != NOT_PROCESSED
        }
        return failed - sum(kept.values()), kept

    def pending(self) -> None:
        message = "planning the shards (listing or counting the dataset) and checking the model"
        if self.status.start_time is None:
            self.set(start_time=self.now)
        self.set(phase=Phase.PENDING, message=message)
        self.condition(ConditionType.PROGRESSING, T, "Planning", message)
        self.condition(ConditionType.MODEL_READY, U, "Planning", "the plan step checks the model")

    def queued(self, reason: str, message: str) -> None:
        self.set(phase=Phase.QUEUED, message=message)
        self.condition(ConditionType.PROGRESSING, F, reason, message)

    def wait_for_slot(self) -> None:
        self.queued(
            "WaitingForSlot",
            f"waiting for a slot: at most {self.config.max_running}"
            " runs run at once (operator maxRunning)",
        )

    def suspended(self, job: JobState | None = None) -> None:
        message = "spec.suspend is true; set it to false to resume"
        if self.spec.queue_name and self.config.kueue:
            message += (
                f" (its Kueue Workload is deactivated; resumed, it waits in LocalQueue "
                f"{self.spec.queue_name} again)"
            )
        elif self.spec.queue_name:
            message += (
                "; the operator cannot stop a queued run's pods without `kueue: true` in its "
                "configuration (Kueue owns the Job's suspend)"
            )
        if job is not None and job.active:
            message += f"; stopping {job.active} worker pod(s)"
        self.set(phase=Phase.SUSPENDED, message=message, eta=None, items_per_second=None)
        self.condition(ConditionType.PROGRESSING, F, "Suspended", message)
        self.condition(ConditionType.STALLED, F, "Suspended", message)

    def plan_totals(self) -> ShardPlan | None:
        """The shard plan as the plan pod told it (or as status recorded it): its items,
        or, by byte ranges, the total once learned (status keeps it) and None before."""
        outcome = self.observed.plan
        items, shards = self.previous.items, self.previous.shards
        learned = items.total if items is not None else None
        if outcome is not None and outcome.succeeded and "total" in outcome.data:
            data = outcome.data
            by_bytes = bool(data.get("byteRanges"))
            total = data["total"] if data["total"] is not None else learned
            if total is None and not by_bytes:
                return None
            return ShardPlan(
                None if total is None else int(total), int(data["shards"]), by_bytes=by_bytes
            )
        if shards is None or not shards.total or (learned is None and not shards.byte_ranges):
            return None
        return ShardPlan(learned, shards.total, by_bytes=bool(shards.byte_ranges))

    def result_lost(self, step: JobState) -> bool:
        """A step's Job completed a while ago but no pod told its result (pods deleted)."""
        ended = step.completion_time
        return step.complete and ended is not None and self.now > ended + STEP_RESULT_GRACE

    def plan_failed(self, plan: JobState) -> None:
        outcome = self.observed.plan
        reason = outcome.reason if outcome and not outcome.succeeded else "PlanFailed"
        message = (outcome.message if outcome else "") or plan.failure_message
        message = message or f"the plan step failed; see `kubectl logs job/{plan.name}`"
        if reason in MODEL_REASONS:
            self.condition(ConditionType.MODEL_READY, F, reason, message)
        self.finish(Phase.FAILED, reason, message)

    def rounds(self) -> None:
        plan = self.plan_totals()
        if plan is None:
            raise ValueError("rounds() needs the plan's totals")
        shards = plan.shards
        self.condition(ConditionType.MODEL_READY, T, "ModelReady", "the plan step found the model")
        rounds = self.observed.rounds()
        # status.round moves on only after the next round's Job was created: until the index
        # shows that Job, the run waits for it instead of judging the previous round again.
        current = max(rounds[-1] if rounds else 0, self.previous.round)
        job = self.observed.job(Role.SHARDS, current)
        if job is None and current == 0 and (self.may_run or not self.spec.queue_name):
            # A queued Job is created only when it may run: Kueue would admit it at once.
            job_spec = build_worker_job(
                self.owner,
                self.spec,
                self.config,
                shards=shards,
                round_=0,
                suspend=not self.may_run,
            )
            self.create(job_spec)
        elif job is not None:
            self.follow_spec(job, shards)
        jobs = [
            ChildJob(name=j.name, round=j.round)
            for j in self.observed.jobs
            if j.role is Role.SHARDS
        ]
        self.set(round=current, jobs=jobs)
        first = self.first_round(current)
        progress = self.progress(plan, first, current)
        self.record_progress(progress, plan, job)
        more = current - (first.round if first else 0) < self.spec.retry.max_rounds
        if job is None or not job.finished:
            self.unfinished_round(job, progress)
        elif (progress.retryable or progress.uncertain) and more:
            self.retrying(job, progress, shards, current)
        else:
            self.finalize(progress, current)

    def first_round(self, current: int) -> JobState | None:
        """The latest manual retry round up to `current`: counting starts there."""
        manual = [
            j
            for j in self.observed.jobs
            if j.role is Role.SHARDS and j.redo_all and j.round <= current
        ]
        return max(manual, key=lambda j: j.round, default=None)

    def progress(self, plan: ShardPlan, first: JobState | None, current: int) -> Progress:
        """Counts from the rounds' reports and completed pods, from round 0 or the last
        manual retry (whose Job holds the counts before it)."""
        start = first.round if first else 0
        baseline = (
            Baseline(first.succeeded_before, first.failed_before, first.kept_before)
            if first
            else None
        )
        views = []
        for r in range(start, current + 1):
            job = self.observed.job(Role.SHARDS, r)
            reports = {rep.spec.shard: rep for rep in self.observed.round_reports(r)}
            exits = {s: d for (rr, s), d in self.observed.shard_results.items() if rr == r}
            outcomes = {}
            for shard in reports.keys() | exits.keys():
                outcome = best_outcome(reports.get(shard), exits.get(shard))
                if outcome is not None and shard < plan.shards:
                    outcomes[shard] = outcome
            finished = job is not None and job.finished
            views.append(
                RoundView(r, outcomes, finished, redo_all=job is not None and job.redo_all)
            )
        return aggregate_progress(
            plan, views, baseline=baseline, failed_items_limit=self.config.failed_items_limit
        )

    def follow_spec(self, job: JobState, shards: int) -> None:
        """Suspend and parallelism may change while a run goes on; the Job follows them.
        Kueue owns `suspend` of a queued run's Job: its Workload's `active` follows instead."""
        if job.finished:
            return
        changes: dict[str, Any] = {}
        if self.spec.queue_name:
            self.set_workload_active(job, active=self.may_run)
        elif job.suspended == self.may_run:
            changes["suspend"] = not self.may_run
        if job.parallelism != min(self.spec.parallelism, shards):
            changes["parallelism"] = min(self.spec.parallelism, shards)
        if changes:
            self.decision.patch_jobs.append((job.name, {"spec": changes}))

    def record_progress(self, progress: Progress, plan: ShardPlan, job: JobState | None) -> None:
        done_before = 0
        before = self.previous.items
        if before is not None:
            done_before = before.succeeded + before.failed
        if progress.done > done_before or self.status.last_progress_time is None:
            self.set(last_progress_time=self.now)
        items = progress.items
        if before is not None and progress.done < done_before and before.total == items.total:
            # A report not seen yet (an operator restart) must not move the counts back.
            items = before
        speed = progress.items_per_second
        self.set(
            items=items,
            progress=progress_text(items.succeeded + items.failed, items.total),
            items_per_second=speed,
            eta=eta(items.pending, speed),
            failed_items=progress.failed_items,
            failure_summary=progress.failure_summary,
            shards=ShardCounts(
                total=plan.shards,
                byte_ranges=plan.by_bytes or None,
                active=job.active if job else 0,
                succeeded=job.completed_indexes if job else 0,
                failed=job.failed_indexes if job else 0,
            ),
        )

    def unfinished_round(self, job: JobState | None, progress: Progress) -> None:
        if self.spec.suspend:
            self.suspended(job)
            return
        if not self.admitted:
            self.wait_for_slot()
            return
        if self.spec.queue_name and (job is None or job.suspended):
            workload = self.observed.workload(job) if job else None
            message = waiting_message(self.spec.queue_name, workload, self.observed.queue, self.now)
            self.queued("WaitingForKueue", message)
            return
        message = "worker pods are scoring the shards"
        items = self.status.items
        if items is not None and items.total is None:
            done = items.succeeded + items.failed
            message += (
                f"; {done} items so far, total unknown until every shard has counted its byte range"
            )
        self.set(phase=Phase.RUNNING, next_retry_time=None, message=message)
        self.condition(ConditionType.PROGRESSING, T, "Running", message)
        last = self.status.last_progress_time or self.now
        idle = (self.now - last).total_seconds()
        if progress.waiting:
            self.condition(
                ConditionType.STALLED,
                T,
                REASON_TRITON_UNAVAILABLE,
                f"{len(progress.waiting)} shard pod(s) wait for Triton: {progress.waiting[0]}",
            )
        elif job is not None and idle > self.spec.stall_timeout_seconds:
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
        if self.now >= at and self.spec.suspend:
            self.suspended(None)
            return
        if self.now >= at and not self.admitted:
            self.wait_for_slot()
            return
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

    def finalize(
        self, progress: Progress, round_: int, ending: tuple[Phase, str, str] | None = None
    ) -> None:
        """Count the files, then end the run with those counts: by the failure policy, or as
        `ending` (phase, reason, message) says for a cancelled or timed-out run."""
        step = self.observed.job(Role.FINALIZE, round_)
        if step is None:
            self.create(build_step_job(self.owner, self.spec, self.config, Role.FINALIZE, round_))
        outcome = self.observed.finalize
        if step is None or not step.finished or (step.complete and outcome is None):
            if step is not None and self.result_lost(step):
                self.finish(
                    Phase.FAILED,
                    "FinalizeResultMissing",
                    f"the finalize pod finished without its counts; see "
                    f"`kubectl logs job/{step.name}` and {output_locations(self.spec).manifest}",
                )
                return
            message = "counting the output files and writing the manifest"
            self.set(message=message, next_retry_time=None)
            if ending is None:
                self.set(phase=Phase.RUNNING)
            self.condition(ConditionType.PROGRESSING, T, "Finalizing", message)
            return
        if step.failed or outcome is None or not outcome.succeeded:
            detail = outcome.message if outcome else step.failure_message
            self.finish(Phase.FAILED, "FinalizeFailed", f"the finalize step failed: {detail}")
            return
        final = final_progress(outcome.data, self.config.failed_items_limit)
        items = final.items
        total = items.total or 0
        self.set(
            evaluation=evaluation_status(outcome.data),
            items=items,
            progress=percent(items.succeeded + items.failed, items.total),
            failed_items=final.failed_items,
            failure_summary=final.failure_summary,
            items_per_second=average_speed(final.done, self.status.start_time, self.now),
            eta=None,
        )
        counts = f"{items.succeeded} of {total} items succeeded"
        if items.failed:
            counts += f", {items.failed} failed"
        if ending is not None:
            phase, reason, message = ending
            self.finish(phase, reason, f"{message}; {counts}")
            return
        phase = terminal_phase(self.spec, items.failed, total)
        reason = phase.value
        if phase is not Phase.SUCCEEDED and progress.waiting:
            reason = REASON_TRITON_UNAVAILABLE
            counts += f"; Triton stayed unreachable: {progress.waiting[0]}"
        self.finish(phase, reason, counts)

    def wind_down(self, phase: Phase, reason: str, message: str) -> None:
        """Stop the pods, then (once none runs) count the files like any finished run."""
        self.stop_jobs()
        totals = self.plan_totals()
        shard_jobs = [j for j in self.observed.jobs if j.role is Role.SHARDS]
        if totals is None or not shard_jobs:
            self.finish(phase, reason, message)
            return
        if any(j.active for j in shard_jobs):
            self.set(message=f"{message}; stopping the worker pods")
            return
        current = max(j.round for j in shard_jobs)
        first = self.first_round(current)
        progress = self.progress(totals, first, current)
        self.finalize(progress, current, ending=(phase, reason, message))

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


def retry_codes(value: str | None) -> tuple[str, ...]:
    """The codes of the retry-codes annotation (`A,B`), sorted; empty for every code."""
    return tuple(sorted({c.strip() for c in (value or "").split(",") if c.strip()}))
