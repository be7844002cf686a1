"""What the console (and the dashboard) shows of runs, as plain data built from the API's
objects: a row per run for `list`, a detail with rounds and shards for `get`, the outcome's
exit code for `watch` and `status`. No I/O and no printing here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from batchpredict.api.v1alpha1.report import LABEL_SHARD
from batchpredict.reconcile.naming import (
    ANNOTATION_RETRY,
    ANNOTATION_RETRY_REQUEST,
    LABEL_REDO,
    LABEL_ROLE,
    LABEL_ROUND,
    Role,
)

FINISHED = {"Succeeded", "PartiallySucceeded", "Failed", "Cancelled"}
# `watch` and `status` exit with the outcome: scripts and CI steps branch on it.
EXIT_SUCCEEDED, EXIT_FAILED, EXIT_PARTIAL, EXIT_TIMEOUT = 0, 1, 2, 124
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def outcome_exit_code(phase: str | None) -> int | None:
    """0 Succeeded, 2 PartiallySucceeded, 1 Failed or Cancelled; None while it runs."""
    if phase == "Succeeded":
        return EXIT_SUCCEEDED
    if phase == "PartiallySucceeded":
        return EXIT_PARTIAL
    if phase in {"Failed", "Cancelled"}:
        return EXIT_FAILED
    return None


def parse_time(value: str | None) -> datetime | None:
    """An API timestamp (RFC 3339); None when absent or unreadable."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class RunRow:
    """One run as `list` shows it."""

    namespace: str
    name: str
    model: str
    dataset: str
    started_by: str
    phase: str
    total: int | None
    succeeded: int
    failed: int
    retrying: int
    round: int
    start: datetime | None
    end: datetime | None
    items_per_second: float | None
    eta: str | None
    message: str
    created: datetime | None
    # A retry asked for (annotation) that the operator has not taken up yet: not over.
    retry_pending: bool = False

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def fraction(self) -> float:
        if not self.total:
            return 1.0 if self.total == 0 else 0.0
        return min(self.done / self.total, 1.0)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED and not self.retry_pending

    @property
    def exit_code(self) -> int | None:
        """The outcome's exit code (`watch`, `status`); None while it is not over."""
        return outcome_exit_code(self.phase) if not self.retry_pending else None

    def duration(self, now: datetime | None = None) -> float | None:
        if self.start is None:
            return None
        end = self.end or now or datetime.now(UTC)
        return max((end - self.start).total_seconds(), 0.0)


def run_row(bp: Mapping[str, Any]) -> RunRow:
    meta, spec, status = bp["metadata"], bp.get("spec") or {}, bp.get("status") or {}
    items = status.get("items") or {}
    model = spec.get("model") or {}
    version = model.get("version")
    return RunRow(
        namespace=str(meta.get("namespace", "")),
        name=str(meta["name"]),
        model=f"{model.get('name', '')}{f':{version}' if version else ''}",
        dataset=str((spec.get("input") or {}).get("uri", "")),
        started_by=str(status.get("startedBy") or ""),
        phase=str(status.get("phase") or "Pending"),
        total=items.get("total"),
        succeeded=int(items.get("succeeded") or 0),
        failed=int(items.get("failed") or 0),
        retrying=int(items.get("retrying") or 0),
        round=int(status.get("round") or 0),
        start=parse_time(status.get("startTime")),
        end=parse_time(status.get("completionTime")),
        items_per_second=status.get("itemsPerSecond"),
        eta=status.get("eta"),
        message=str(status.get("message") or ""),
        created=parse_time(meta.get("creationTimestamp")),
        retry_pending=_retry_pending(meta, status),
    )


def _retry_pending(meta: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    asked = (meta.get("annotations") or {}).get(ANNOTATION_RETRY)
    return bool(asked) and asked != status.get("lastRetryRequest")


def filter_runs(
    rows: Iterable[RunRow],
    *,
    phase: str | None = None,
    model: str | None = None,
    user: str | None = None,
) -> list[RunRow]:
    """Runs in `phase` (case-insensitive), of `model`, started by `user`; newest first."""
    kept = [
        r
        for r in rows
        if (phase is None or r.phase.lower() == phase.lower())
        and (model is None or r.model.split(":")[0] == model)
        and (user is None or r.started_by == user)
    ]
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(kept, key=lambda r: (r.created or oldest, r.name), reverse=True)


# --- get: rounds and shards ------------------------------------------------------------------
DONE, RUNNING, FAILED, PENDING, WAITING = "done", "running", "failed", "pending", "waiting"


@dataclass
class ShardNode:
    shard: int
    state: str = PENDING
    done: int = 0
    total: int | None = None
    failed: int = 0
    items_per_second: float | None = None
    pod: str = ""
    message: str = ""


@dataclass
class RoundNode:
    round: int
    job: str = ""
    manual: bool = False
    state: str = PENDING
    shards: list[ShardNode] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(s.done for s in self.shards)

    @property
    def total(self) -> int | None:
        totals = [s.total for s in self.shards]
        return None if any(t is None for t in totals) else sum(t or 0 for t in totals)


@dataclass
class RunDetail:
    """One run as `get` shows it."""

    row: RunRow
    uid: str
    output: str
    conditions: list[dict[str, Any]]
    failure_summary: list[dict[str, Any]]
    failed_items: list[dict[str, Any]]
    rounds: list[RoundNode]
    evaluation: dict[str, Any] | None = None


def _job_state(job: Mapping[str, Any]) -> str:
    found = (job.get("status") or {}).get("conditions") or []
    conditions = {c["type"] for c in found if c["status"] == "True"}
    if "Complete" in conditions:
        return DONE
    if "Failed" in conditions:
        return FAILED
    if (job.get("status") or {}).get("active") or (job.get("status") or {}).get("ready"):
        return RUNNING
    return PENDING


def _indexes(text: str | None) -> set[int]:
    found: set[int] = set()
    for part in (text or "").split(","):
        if "-" in part:
            low, high = part.split("-")
            found.update(range(int(low), int(high) + 1))
        elif part:
            found.add(int(part))
    return found


def build_rounds(
    jobs: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    reports: Iterable[Mapping[str, Any]],
    shard_manifests: Mapping[tuple[int, int], Mapping[str, Any]],
    shards: int,
) -> list[RoundNode]:
    """The run's rounds (its shard Jobs), each with its shards' state, items and pod: live
    reports while it runs, the shards' manifests in the output once they finished."""
    rounds = _round_nodes(jobs, shards)
    for (r, s), manifest in shard_manifests.items():
        if r in rounds and s < shards:
            _from_manifest(rounds[r].shards[s], manifest)
    for report in reports:
        spec = report.get("spec") or {}
        r, s = int(spec.get("round", 0)), int(spec.get("shard", 0))
        if r in rounds and s < shards:
            _from_report(rounds[r].shards[s], report.get("progress") or {})
    for pod in pods:
        _from_pod(rounds, pod, shards)
    return [rounds[r] for r in sorted(rounds)]


def _round_nodes(jobs: Iterable[Mapping[str, Any]], shards: int) -> dict[int, RoundNode]:
    rounds: dict[int, RoundNode] = {}
    for job in jobs:
        labels = job["metadata"].get("labels") or {}
        if labels.get(LABEL_ROLE) != Role.SHARDS.value:
            continue
        r = int(labels.get(LABEL_ROUND, "0"))
        annotations = job["metadata"].get("annotations") or {}
        node = RoundNode(
            r,
            job=str(job["metadata"]["name"]),
            manual=ANNOTATION_RETRY_REQUEST in annotations or LABEL_REDO in labels,
            state=_job_state(job),
        )
        node.shards = [ShardNode(s) for s in range(shards)]
        status = job.get("status") or {}
        for state, key in ((DONE, "completedIndexes"), (FAILED, "failedIndexes")):
            for s in _indexes(status.get(key)):
                if s < shards:
                    node.shards[s].state = state
        rounds[r] = node
    return rounds


def _from_manifest(shard: ShardNode, manifest: Mapping[str, Any]) -> None:
    shard.total = int(manifest.get("items", 0))
    shard.failed = int(manifest.get("failed", 0))
    shard.done = int(manifest.get("succeeded", 0)) + shard.failed
    shard.items_per_second = manifest.get("itemsPerSecond")
    if shard.state == PENDING:
        shard.state = DONE


def _from_report(shard: ShardNode, progress: Mapping[str, Any]) -> None:
    shard.total = int(progress.get("itemsTotal", 0))
    shard.failed = int(progress.get("failed", 0))
    shard.done = int(progress.get("succeeded", 0)) + shard.failed
    shard.items_per_second = progress.get("itemsPerSecond") or None
    shard.message = str(progress.get("message") or "")
    if progress.get("finished"):
        shard.state = DONE
    elif progress.get("waitingReason"):
        shard.state = WAITING


def _from_pod(rounds: dict[int, RoundNode], pod: Mapping[str, Any], shards: int) -> None:
    meta = pod["metadata"]
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    if labels.get(LABEL_ROLE) != Role.SHARDS.value:
        return
    r = int(labels.get(LABEL_ROUND, "0"))
    s = int(annotations.get(COMPLETION_INDEX, labels.get(LABEL_SHARD, "-1")))
    if r not in rounds or not 0 <= s < shards:
        return
    shard = rounds[r].shards[s]
    phase = (pod.get("status") or {}).get("phase")
    # The running or succeeded pod names the index (a retried index has several).
    if phase in {"Running", "Succeeded"} or not shard.pod:
        shard.pod = str(meta["name"])
    if phase == "Running" and shard.state == PENDING:
        shard.state = RUNNING


def run_detail(
    bp: Mapping[str, Any],
    rounds: list[RoundNode],
    evaluation: dict[str, Any] | None = None,
) -> RunDetail:
    status = bp.get("status") or {}
    return RunDetail(
        row=run_row(bp),
        uid=str(bp["metadata"].get("uid", "")),
        output=str(((bp.get("spec") or {}).get("output") or {}).get("uri", "")),
        conditions=list(status.get("conditions") or []),
        failure_summary=list(status.get("failureSummary") or []),
        failed_items=list(status.get("failedItems") or []),
        rounds=rounds,
        evaluation=evaluation,
    )


def shard_count(bp: Mapping[str, Any]) -> int:
    return int(((bp.get("status") or {}).get("shards") or {}).get("total") or 0)
