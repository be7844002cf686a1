"""Fold the workers' shard reports into the run's item counts, throughput and failures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batchpredict.api.v1alpha1.report import BatchPredictionShard
from batchpredict.api.v1alpha1.status import FailedItem, FailureSummaryEntry, ItemCounts
from batchpredict.planning import ShardPlan

# Items a round was given but no shard accounted for (its pod broke for good, or its report
# is lost): counted as failed under the code finalize records them with, and retryable.
NOT_PROCESSED = "NOT_PROCESSED"


@dataclass(frozen=True)
class ShardOutcome:
    """What one shard did in one round, from its report or from its pod's exit summary."""

    items_total: int
    succeeded: int = 0
    failed: int = 0
    retryable_failed: int = 0
    finished: bool = False
    failure_counts: Mapping[str, int] = field(default_factory=dict)
    retryable_counts: Mapping[str, int] = field(default_factory=dict)
    sample: tuple[FailedItem, ...] = ()
    items_per_second: float = 0.0
    waiting_reason: str | None = None
    message: str | None = None

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @classmethod
    def from_report(cls, report: BatchPredictionShard) -> ShardOutcome:
        p = report.progress
        return cls(
            items_total=p.items_total,
            succeeded=p.succeeded,
            failed=p.failed,
            retryable_failed=p.retryable_failed,
            finished=p.finished,
            failure_counts=p.failure_counts,
            retryable_counts=p.retryable_counts,
            sample=tuple(p.failed_sample),
            items_per_second=p.items_per_second,
            waiting_reason=p.waiting_reason,
            message=p.message,
        )

    @classmethod
    def from_exit(cls, summary: Mapping[str, Any]) -> ShardOutcome:
        """The summary a shard pod leaves in its termination message when it completed: what
        its committed files hold, even when its report never reached the API server."""
        return cls(
            items_total=int(summary.get("items", 0)),
            succeeded=int(summary.get("succeeded", 0)),
            failed=int(summary.get("failed", 0)),
            retryable_failed=int(summary.get("retryableFailed", 0)),
            finished=True,
            failure_counts=dict(summary.get("failureCounts") or {}),
            retryable_counts=dict(summary.get("retryableCounts") or {}),
        )


def best_outcome(
    report: BatchPredictionShard | None, exit_summary: Mapping[str, Any] | None
) -> ShardOutcome | None:
    """A finished report, else the completed pod's summary, else the report so far."""
    from_report = ShardOutcome.from_report(report) if report is not None else None
    if from_report is not None and from_report.finished:
        return from_report
    if exit_summary is not None:
        return ShardOutcome.from_exit(exit_summary)
    return from_report


@dataclass(frozen=True)
class RoundView:
    """One round of a run: its shards' outcomes so far and whether its Job has finished."""

    round: int
    outcomes: Mapping[int, ShardOutcome]
    finished: bool = False
    redo_all: bool = False  # a manual retry: redoes every final failure before it


@dataclass(frozen=True)
class Baseline:
    """The run's final counts before a manual retry round (its Job records them)."""

    succeeded: int
    failed: int  # the final failures the manual round redoes
    kept: Mapping[str, int] = field(default_factory=dict)  # {code: n} final failures it leaves


@dataclass(frozen=True)
class Progress:
    items: ItemCounts
    items_per_second: float | None
    failed_items: list[FailedItem]
    failure_summary: list[FailureSummaryEntry]
    # The last round finished with items whose outcome it cannot tell (no report, no exit
    # summary): a further round must look at them.
    uncertain: bool = False
    # Messages of the last round's shards that wait (or gave up waiting) for Triton.
    waiting: tuple[str, ...] = ()

    @property
    def done(self) -> int:
        return self.items.succeeded + self.items.failed

    @property
    def retryable(self) -> int:
        return self.items.retrying


class _Accounting:
    """Walks the rounds of `aggregate_progress`, oldest first."""

    def __init__(self, plan: ShardPlan, baseline: Baseline | None) -> None:
        self.plan = plan
        self.succeeded = baseline.succeeded if baseline else 0
        self.failed = sum(baseline.kept.values()) if baseline else 0
        self.retrying = 0
        self.uncertain = False
        self.speed = 0.0
        self.waiting: list[str] = []
        self.codes: Counter[str] = Counter(baseline.kept if baseline else {})
        self.retryable_codes: set[str] = set()
        self.samples: list[FailedItem] = []
        # Items given to each shard of the round at hand (None: not known per shard, after a
        # manual retry whose shard has not reported), and to the whole round.
        # Byte-range plans: None while a shard has not counted its range.
        self.given: dict[int, int | None]
        self.given_total: int | None
        if baseline is None:
            self.given = {s: plan.shard_size(s) for s in range(plan.shards)}
            self.given_total = plan.total_items
        else:
            self.given, self.given_total = dict.fromkeys(range(plan.shards)), baseline.failed
        self.handed_on = baseline is not None  # the round at hand redoes earlier failures
        self.total = plan.total_items
        self.first_view = baseline is None

    def _sizes(self, view: RoundView) -> tuple[dict[int, int], int | None]:
        """Items of each shard of `view` where known, and the items of the other shards
        (None: not known, a byte-range plan before every shard counted its range)."""
        sizes: dict[int, int] = {}
        for s in range(self.plan.shards):
            outcome = view.outcomes.get(s)
            size = outcome.items_total if outcome else self.given.get(s)
            if size is not None:
                sizes[s] = size
        if self.first_view and self.total is None and len(sizes) == self.plan.shards:
            self.total = self.given_total = sum(sizes.values())  # learned: all have counted
        self.first_view = False
        if len(sizes) == self.plan.shards:
            return sizes, 0
        if self.given_total is None:
            return sizes, None
        return sizes, max(self.given_total - sum(sizes.values()), 0)

    def earlier_round(self, view: RoundView, *, next_redoes_all: bool) -> None:
        """A round a later one followed: its failures are final unless handed on."""
        sizes, unknown = self._sizes(view)
        given: dict[int, int | None] = {}
        for s in range(self.plan.shards):
            outcome = view.outcomes.get(s) or ShardOutcome(items_total=sizes.get(s, 0))
            self.succeeded += outcome.succeeded
            kept = 0 if next_redoes_all else self._kept_failures(outcome)
            self.failed += kept
            left = 0 if outcome.finished else sizes[s] - outcome.done if s in sizes else None
            given[s] = None if left is None else outcome.failed - kept + max(left, 0)
        self.given = given
        handed = sum(n for n in given.values() if n is not None)
        self.given_total = None if unknown is None else handed + unknown
        self.handed_on = True

    def _kept_failures(self, outcome: ShardOutcome) -> int:
        for code, n in outcome.failure_counts.items():
            if n > outcome.retryable_counts.get(code, 0):
                self.codes[code] += n - outcome.retryable_counts.get(code, 0)
        self.samples += [item for item in outcome.sample if not item.retryable]
        return outcome.failed - outcome.retryable_failed

    def latest_round(self, view: RoundView) -> None:
        """The round at hand: every failure counts; what it has not accounted for is
        retrying (handed on from a failure), pending (round 0), or NOT_PROCESSED (finished)."""
        sizes, unknown = self._sizes(view)
        open_items = unknown or 0
        for s in range(self.plan.shards):
            outcome = view.outcomes.get(s)
            if outcome is None:
                open_items += sizes.get(s, 0)
                continue
            self.succeeded += outcome.succeeded
            self.failed += outcome.failed
            self.codes.update(outcome.failure_counts)
            self.retryable_codes.update(c for c, n in outcome.retryable_counts.items() if n)
            self.samples += outcome.sample
            if not outcome.finished:
                open_items += max(outcome.items_total - outcome.done, 0)
                self.speed += outcome.items_per_second
            if outcome.waiting_reason:
                self.waiting.append(outcome.message or outcome.waiting_reason)
        if view.finished:
            self.uncertain = unknown is None or unknown > 0
            self.retrying = open_items + sum(o.retryable_failed for o in view.outcomes.values())
            if open_items:
                self.codes[NOT_PROCESSED] += open_items
                self.retryable_codes.add(NOT_PROCESSED)
        elif self.handed_on:
            self.retrying = open_items  # failed before, not retried yet: still failed
        if view.finished or self.handed_on:
            self.failed += open_items

    def progress(self, failed_items_limit: int) -> Progress:
        total = self.total
        summary = [
            FailureSummaryEntry(code=code, count=n, retryable=code in self.retryable_codes)
            for code, n in sorted(self.codes.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        return Progress(
            items=ItemCounts(
                total=total,
                succeeded=self.succeeded,
                failed=self.failed,
                retrying=self.retrying,
                pending=None if total is None else max(total - self.succeeded - self.failed, 0),
            ),
            items_per_second=round(self.speed, 1) if self.speed else None,
            failed_items=sorted(self.samples, key=lambda i: (i.shard, i.id))[:failed_items_limit],
            failure_summary=summary,
            uncertain=self.uncertain,
            waiting=tuple(self.waiting),
        )


def aggregate_progress(
    plan: ShardPlan,
    rounds: Sequence[RoundView],
    *,
    baseline: Baseline | None = None,
    failed_items_limit: int = 20,
) -> Progress:
    """Counts over the rounds so far (from round 0, or from a manual retry's `baseline`).

    Every item a round was given ends in it as succeeded, failed, or unaccounted (its shard
    never told); round r+1 is given round r's retryable failures (every failure: redo-all)
    and its unaccounted items. `failed` counts every item whose latest outcome is a failure,
    including those a running or coming round retries (`retrying`), so that succeeded +
    failed never goes down while a run goes on. Items the last, finished round left
    unaccounted count as NOT_PROCESSED failures to retry; `uncertain` says a shard's share of
    them is not known.
    """
    accounting = _Accounting(plan, baseline)
    for i, view in enumerate(rounds):
        if i + 1 < len(rounds):
            accounting.earlier_round(view, next_redoes_all=rounds[i + 1].redo_all)
        else:
            accounting.latest_round(view)
    return accounting.progress(failed_items_limit)


def percent(done: int, total: int | None) -> str | None:
    """`63%` for the printer column; floors, so 100% means every item is done."""
    if not total:
        return None if total is None else "100%"
    return f"{done * 100 // total}%"


def progress_text(done: int, total: int | None) -> str | None:
    """The printer column: `63%`, or what is known while the total is not."""
    if total is None:
        return f"{done} done, total unknown"
    return percent(done, total)


def format_duration(seconds: float) -> str:
    """`1h2m`, `4m10s`, `9s`: short like kubectl's AGE column."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def eta(pending: int | None, items_per_second: float | None) -> str | None:
    if not pending or not items_per_second:
        return None
    return format_duration(pending / items_per_second)


def average_speed(done: int, start: datetime | None, end: datetime) -> float | None:
    """Items per second over a whole run (when no pod reports a live speed)."""
    if start is None or done == 0:
        return None
    seconds = (end - start).total_seconds()
    return round(done / seconds, 1) if seconds > 0 else None


def final_progress(summary: Mapping[str, Any], failed_items_limit: int = 20) -> Progress:
    """The terminal counts from what the finalize step counted in the files."""
    counts: Mapping[str, int] = summary.get("failureCounts") or {}
    retryable: Mapping[str, int] = summary.get("retryableCounts") or {}
    total = int(summary["total"])
    failure_summary = [
        FailureSummaryEntry(code=code, count=n, retryable=bool(retryable.get(code)))
        for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    samples = [FailedItem.model_validate(item) for item in summary.get("failedSample") or []]
    return Progress(
        items=ItemCounts(
            total=total,
            succeeded=int(summary["succeeded"]),
            failed=int(summary["failed"]),
            retrying=0,
            pending=0,
        ),
        items_per_second=None,
        failed_items=samples[:failed_items_limit],
        failure_summary=failure_summary,
    )
