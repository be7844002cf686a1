"""Prometheus metrics of the operator (served on `metricsPort`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from batchpredict.api.v1alpha1.status import EvaluationState, EvaluationStatus

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
EVALUATION = Gauge(
    "batchpredict_evaluation",
    "A run's evaluation against labels while the run exists: its headline metric (accuracy, "
    "rocAuc, f1Micro or rmse) and labelCoverage (scored items / all items).",
    ["namespace", "name", "metric"],
)


class PhaseTracker:
    """Keeps RUNS and ITEMS exact across reconciles: phase per run, items counted once."""

    def __init__(self) -> None:
        self._phases: dict[str, str] = {}
        self._items: dict[str, tuple[int, int]] = {}
        self._evaluations: dict[str, list[tuple[str, str, str]]] = {}  # uid -> gauge labels

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

    def observe_evaluation(
        self, uid: str, namespace: str, name: str, evaluation: EvaluationStatus | None
    ) -> None:
        """The run's evaluation gauges: set from status, removed when it has none."""
        values: dict[str, float] = {}
        if evaluation is not None and evaluation.state is EvaluationState.EVALUATED:
            if evaluation.metric and evaluation.value is not None:
                values[evaluation.metric] = evaluation.value
            if evaluation.label_coverage is not None:
                values["labelCoverage"] = evaluation.label_coverage
        wanted = [(namespace, name, metric) for metric in values]
        for labels in self._evaluations.get(uid, []):
            if labels not in wanted:
                EVALUATION.remove(*labels)
        for labels in wanted:
            EVALUATION.labels(*labels).set(values[labels[2]])
        self._evaluations[uid] = wanted

    def forget(self, uid: str) -> None:
        phase = self._phases.pop(uid, None)
        if phase is not None:
            RUNS.labels(phase=phase).dec()
        self._items.pop(uid, None)
        for labels in self._evaluations.pop(uid, []):
            EVALUATION.remove(*labels)
