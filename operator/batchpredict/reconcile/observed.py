"""What the operator observed of a run's children, parsed once from API objects."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batchpredict.api.v1alpha1.report import BatchPredictionShard
from batchpredict.reconcile.kueue import WorkloadState
from batchpredict.reconcile.naming import (
    ANNOTATION_FAILED_BEFORE,
    ANNOTATION_KEPT_BEFORE,
    ANNOTATION_RETRY_REQUEST,
    ANNOTATION_SUCCEEDED_BEFORE,
    LABEL_EVALUATION,
    LABEL_ROLE,
    LABEL_ROUND,
    Role,
)

# The Job controller's annotation on each pod of an Indexed Job.
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def parse_indexes(ranges: str | None) -> frozenset[int]:
    """The indexes a Job's `completedIndexes`/`failedIndexes` ("1,3-5") names."""
    if not ranges:
        return frozenset()
    indexes: set[int] = set()
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        indexes.update(range(int(first), int(last or first) + 1))
    return frozenset(indexes)


def controller_uid(meta: Mapping[str, Any], kind: str | None = None) -> str | None:
    """The UID of the object's controller owner (of `kind`), or None."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and (kind is None or ref.get("kind") == kind):
            return str(ref.get("uid"))
    return None


def owner_uid(meta: Mapping[str, Any], kind: str) -> str | None:
    """The UID of the first owner of `kind` (controller or not), or None."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == kind:
            return str(ref.get("uid"))
    return None


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class JobState:
    """The parts of a Job's status that decide a run's phase and shard counts."""

    name: str
    role: Role
    round: int
    completions: int
    uid: str = ""
    parallelism: int = 1
    # A manual retry round: the request it answers (ManualRetry in jobs.py), else None.
    retry_request: str | None = None
    succeeded_before: int = 0
    failed_before: int = 0
    evaluation_key: str = ""  # an evaluate Job: the spec.evaluation it measures
    kept_before: Mapping[str, int] = field(default_factory=dict)
    active: int = 0
    completed: frozenset[int] = frozenset()
    failed_set: frozenset[int] = frozenset()
    complete: bool = False
    failed: bool = False
    failure_reason: str = ""
    failure_message: str = ""
    suspended: bool = False
    start_time: datetime | None = None
    completion_time: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.complete or self.failed

    @property
    def redo_all(self) -> bool:
        return self.retry_request is not None

    @property
    def completed_indexes(self) -> int:
        return len(self.completed)

    @property
    def failed_indexes(self) -> int:
        return len(self.failed_set)

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> JobState:
        meta, spec, status = job["metadata"], job.get("spec", {}), job.get("status") or {}
        labels = meta.get("labels", {})
        annotations = meta.get("annotations") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or [] if c["status"] == "True"}
        failed = conditions.get("Failed", {})
        completions = int(spec.get("completions") or 1)
        completed = parse_indexes(status.get("completedIndexes"))
        if spec.get("completionMode") != "Indexed":
            completed = frozenset(range(int(status.get("succeeded") or 0)))
        return cls(
            name=meta["name"],
            role=Role(labels.get(LABEL_ROLE, Role.SHARDS.value)),
            round=int(labels.get(LABEL_ROUND, "0")),
            completions=completions,
            uid=str(meta.get("uid", "")),
            parallelism=int(spec.get("parallelism") or 1),
            retry_request=annotations.get(ANNOTATION_RETRY_REQUEST),
            succeeded_before=int(annotations.get(ANNOTATION_SUCCEEDED_BEFORE, "0")),
            failed_before=int(annotations.get(ANNOTATION_FAILED_BEFORE, "0")),
            evaluation_key=labels.get(LABEL_EVALUATION, ""),
            kept_before=_counts(annotations.get(ANNOTATION_KEPT_BEFORE)),
            active=int(status.get("active") or 0),
            completed=completed,
            failed_set=parse_indexes(status.get("failedIndexes")),
            complete="Complete" in conditions,
            failed=bool(failed),
            failure_reason=failed.get("reason", ""),
            failure_message=failed.get("message", ""),
            suspended=bool(spec.get("suspend")),
            start_time=_time(status.get("startTime")),
            completion_time=_time(status.get("completionTime")),
        )


@dataclass(frozen=True)
class StepOutcome:
    """What a plan or finalize pod said in its termination message (compact JSON)."""

    succeeded: bool
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return str(self.data.get("reason") or "StepFailed")

    @property
    def message(self) -> str:
        return str(self.data.get("message") or "")

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any], container: str) -> StepOutcome | None:
        """The outcome of a finished pod; None while it runs or when it said nothing."""
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != container:
                continue
            terminated = (status.get("state") or {}).get("terminated")
            if not terminated:
                return None
            text = terminated.get("message") or ""
            try:
                data = json.loads(text) if text.strip().startswith("{") else {"message": text}
            except json.JSONDecodeError:
                data = {"message": text}
            return cls(succeeded=terminated.get("exitCode") == 0, data=data)
        return None


@dataclass(frozen=True)
class PodResult:
    """What the operator keeps of one finished worker pod: which step it ran, the Job that
    controls it, and what it said on exit."""

    role: Role
    round: int
    index: int
    job_uid: str
    outcome: StepOutcome

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any], container: str) -> PodResult | None:
        """None while the pod runs, or for a pod no Job controls."""
        meta = pod.get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        outcome = StepOutcome.from_pod(pod, container)
        job_uid = controller_uid(meta, "Job")
        if outcome is None or job_uid is None:
            return None
        return cls(
            role=Role(labels.get(LABEL_ROLE, Role.SHARDS.value)),
            round=int(labels.get(LABEL_ROUND, "0")),
            index=int(annotations.get(COMPLETION_INDEX, "0")),
            job_uid=job_uid,
            outcome=outcome,
        )


@dataclass(frozen=True)
class Observed:
    """Everything a status computation needs to know about a run's children, at `now`."""

    now: datetime
    jobs: tuple[JobState, ...] = ()
    reports: tuple[BatchPredictionShard, ...] = ()
    plan: StepOutcome | None = None
    finalize: StepOutcome | None = None  # of the latest finalize Job
    # (round, shard) -> the exit summary of the shard's pod that completed it.
    shard_results: Mapping[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    # evaluation key -> what the evaluate pod of that spec.evaluation said.
    evaluations: Mapping[str, StepOutcome] = field(default_factory=dict)
    # The Workloads of the run's Kueue LocalQueue (every run's in that queue and namespace).
    queue: tuple[WorkloadState, ...] = ()

    def evaluate_job(self, key: str) -> JobState | None:
        for job in self.jobs:
            if job.role is Role.EVALUATE and job.evaluation_key == key:
                return job
        return None

    def workload(self, job: JobState) -> WorkloadState | None:
        """The Workload Kueue made for `job` (found by the Job's UID), or None yet."""
        for workload in self.queue:
            if job.uid and workload.job_uid == job.uid:
                return workload
        return None

    def job(self, role: Role, round_: int = 0) -> JobState | None:
        for job in self.jobs:
            if job.role is role and job.round == round_:
                return job
        return None

    def rounds(self) -> list[int]:
        """Rounds that have a shard Job, in order."""
        return sorted(j.round for j in self.jobs if j.role is Role.SHARDS)

    def round_reports(self, round_: int) -> list[BatchPredictionShard]:
        return [r for r in self.reports if r.spec.round == round_]


def observe_run(
    now: datetime,
    jobs: tuple[JobState, ...],
    reports: tuple[BatchPredictionShard, ...],
    pods: tuple[PodResult, ...],
    queue: tuple[WorkloadState, ...] = (),
) -> Observed:
    """A run's children as its status computation sees them. `jobs` and `reports` are those
    its owner reference ties to the run; a pod counts only when one of those Jobs controls it."""
    by_uid = {job.uid: job for job in jobs}
    finalize_rounds = [j.round for j in jobs if j.role is Role.FINALIZE]
    last_finalize = max(finalize_rounds, default=None)
    steps: dict[Role, StepOutcome] = {}
    shard_results: dict[tuple[int, int], dict[str, Any]] = {}
    evaluations: dict[str, StepOutcome] = {}
    for pod in pods:
        job = by_uid.get(pod.job_uid)
        if job is None or job.role is not pod.role or job.round != pod.round:
            continue
        if pod.role is Role.EVALUATE:
            if job.evaluation_key not in evaluations or pod.outcome.succeeded:
                evaluations[job.evaluation_key] = pod.outcome
            continue
        if pod.role is Role.SHARDS:
            if pod.outcome.succeeded:
                shard_results[(pod.round, pod.index)] = pod.outcome.data
            continue
        if pod.role is Role.FINALIZE and pod.round != last_finalize:
            continue  # an earlier finalize (before a manual retry) says nothing of this one
        # A retried step has several pods: a success wins, else any finished one.
        if pod.role not in steps or pod.outcome.succeeded:
            steps[pod.role] = pod.outcome
    return Observed(
        now=now,
        jobs=jobs,
        reports=reports,
        plan=steps.get(Role.PLAN),
        finalize=steps.get(Role.FINALIZE),
        shard_results=shard_results,
        evaluations=evaluations,
        queue=queue,
    )


def _counts(text: str | None) -> dict[str, int]:
    """{code: count} from a Job annotation; anything unreadable counts as none."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int)}
