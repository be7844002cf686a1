"""Prometheus metrics of the operator (served on `metricsPort`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUNS = Gauge("batchpredict_runs", "BatchPredictions by phase.", ["phase"])
ITEMS = Counter("batchpredict_items_total", "Items finished, by outcome.", ["outcome"])
RECONCILE_SECONDS = Histogram(
    "batchpredict_reconcile_duration_seconds",
    "Time of one reconcile of one BatchPrediction.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
)
STATUS_PATCHES = Counter("batchpredict_status_patches_total", "Status patches written.")
JOBS_CREATED = Counter("batchpredict_jobs_created_total", "Jobs created, by role.", ["role"])
EVENTS = Counter("batchpredict_events_total", "Events posted, by reason.", ["reason"])


class PhaseTracker:
    """Keeps RUNS and ITEMS exact across reconciles: phase per run, items counted once."""

    def __init__(self) -> None:
        self._phases: dict[str, str] = {}
        self._items: dict[str, tuple[int, int]] = {}

    def observe(self, uid: str, phase: str | None, succeeded: int, failed: int) -> None:
        if phase is not None and self._phases.get(uid) != phase:
            if uid in self._phases:
                RUNS.labels(phase=self._phases[uid]).dec()
            RUNS.labels(phase=phase).inc()
            self._phases[uid] = phase
        before_ok, before_failed = self._items.get(uid, (0, 0))
        if succeeded > before_ok:
            ITEMS.labels(outcome="succeeded").inc(succeeded - before_ok)
        if failed > before_failed:
            ITEMS.labels(outcome="failed").inc(failed - before_failed)
        self._items[uid] = (max(succeeded, before_ok), max(failed, before_failed))

    def forget(self, uid: str) -> None:
        phase = self._phases.pop(uid, None)
        if phase is not None:
            RUNS.labels(phase=phase).dec()
        self._items.pop(uid, None)
