"""Fold the workers' shard reports into the run's item counts, throughput and failures."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from batchpredict.api.v1alpha1.report import BatchPredictionShard
from batchpredict.api.v1alpha1.status import FailedItem, FailureSummaryEntry, ItemCounts

# Items of a shard whose pod never finished it (index failed for good): counted as failed
# under this code, retryable, so a later round can redo the shard.
SHARD_FAILED = "SHARD_FAILED"


@dataclass(frozen=True)
class Progress:
    items: ItemCounts
    items_per_second: float | None
    failed_items: list[FailedItem]
    failure_summary: list[FailureSummaryEntry]

    @property
    def done(self) -> int:
        return self.items.succeeded + self.items.failed

    @property
    def retryable(self) -> int:
        return self.items.retrying


def aggregate_progress(
    total: int | None,
    reports_by_round: dict[int, list[BatchPredictionShard]],
    *,
    last_round: int,
    last_round_finished: bool,
    unreported_failed: int = 0,
    failed_items_limit: int = 20,
    redo_all_rounds: frozenset[int] = frozenset(),
) -> Progress:
    """Counts over every round so far.

    Round r+1 redoes the retryable failures of round r (every failure when r+1 is in
    `redo_all_rounds`, a manual retry), so those count once, in the latest round that saw them;
    `retrying` are the latest round's retryable failures once it finished.
    `unreported_failed` are items of shards that broke without reporting them.
    """
    succeeded = failed = retrying = 0
    codes: Counter[tuple[str, bool]] = Counter()
    samples: list[FailedItem] = []
    for round_ in sorted(reports_by_round):
        latest = round_ == last_round
        for report in reports_by_round[round_]:
            p = report.progress
            succeeded += p.succeeded
            carried = p.failed if round_ + 1 in redo_all_rounds else p.retryable_failed
            failed += p.failed if latest else p.failed - carried
            if latest:
                samples += p.failed_sample
                codes.update({(code, False): n for code, n in p.failure_counts.items()})
    if unreported_failed:
        failed += unreported_failed
        codes[(SHARD_FAILED, True)] += unreported_failed
    latest_reports = reports_by_round.get(last_round, [])
    if last_round_finished:
        retrying = sum(r.progress.retryable_failed for r in latest_reports) + unreported_failed
    speed = sum(r.progress.items_per_second for r in latest_reports if not r.progress.finished)
    pending = None if total is None else max(total - succeeded - failed, 0)
    retryable_codes = {i.code for i in samples if i.retryable}
    summary = [
        FailureSummaryEntry(code=code, count=n, retryable=flag or code in retryable_codes)
        for (code, flag), n in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0][0]))
    ]
    return Progress(
        items=ItemCounts(
            total=total, succeeded=succeeded, failed=failed, retrying=retrying, pending=pending
        ),
        items_per_second=round(speed, 1) if speed else None,
        failed_items=sorted(samples, key=lambda i: (i.shard, i.id))[:failed_items_limit],
        failure_summary=summary,
    )


def percent(done: int, total: int | None) -> str | None:
    """`63%` for the printer column; floors, so 100% means every item is done."""
    if not total:
        return None if total is None else "100%"
    return f"{done * 100 // total}%"


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
