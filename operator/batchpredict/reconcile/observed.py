"""What the operator observed of a run's children, parsed once from API objects."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batchpredict.api.v1alpha1.report import BatchPredictionShard
from batchpredict.reconcile.naming import LABEL_REDO, LABEL_ROLE, LABEL_ROUND, Role


def count_indexes(ranges: str | None) -> int:
    """How many indexes a Job's `completedIndexes`/`failedIndexes` ("1,3-5") names."""
    if not ranges:
        return 0
    total = 0
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        total += int(last) - int(first) + 1 if last else 1
    return total


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
    parallelism: int = 1
    redo_all: bool = False
    active: int = 0
    completed_indexes: int = 0
    failed_indexes: int = 0
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

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> JobState:
        meta, spec, status = job["metadata"], job.get("spec", {}), job.get("status") or {}
        labels = meta.get("labels", {})
        conditions = {c["type"]: c for c in status.get("conditions") or [] if c["status"] == "True"}
        failed = conditions.get("Failed", {})
        completions = int(spec.get("completions") or 1)
        completed = count_indexes(status.get("completedIndexes"))
        if spec.get("completionMode") != "Indexed":
            completed = int(status.get("succeeded") or 0)
        return cls(
            name=meta["name"],
            role=Role(labels.get(LABEL_ROLE, Role.SHARDS.value)),
            round=int(labels.get(LABEL_ROUND, "0")),
            completions=completions,
            parallelism=int(spec.get("parallelism") or 1),
            redo_all=labels.get(LABEL_REDO) == "all",
            active=int(status.get("active") or 0),
            completed_indexes=completed,
            failed_indexes=count_indexes(status.get("failedIndexes")),
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
class Observed:
    """Everything a status computation needs to know about a run's children, at `now`."""

    now: datetime
    jobs: tuple[JobState, ...] = ()
    reports: tuple[BatchPredictionShard, ...] = ()
    plan: StepOutcome | None = None
    finalize: StepOutcome | None = None

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
