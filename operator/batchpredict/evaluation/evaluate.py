"""Measure a finished run's predictions against labels: `evaluation.json` and its headline.

Reads the run through RunOutputs (the one reader of a run's outputs), file by file. Every item
of the run is counted once: scored (a usable label and prediction), unlabelled (a prediction
without a label), unusable (a label or prediction the task cannot read), or failed (no
prediction; with a labels dataset, how many of those had a label is counted too). Labels of a
labels dataset that match no item of the run are counted as well.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from batchpredict.api.v1alpha1.evaluation import EvaluationSpec, EvaluationTask
from batchpredict.evaluation.labels import Bucket, Labelled, buckets
from batchpredict.evaluation.metrics import (
    BinaryMetrics,
    ClassificationMetrics,
    Metrics,
    MultilabelMetrics,
    RegressionMetrics,
    UnusableValueError,
)
from batchpredict.io.results import RunOutputs

log = logging.getLogger("batchpredict.evaluation")
SCHEMA_VERSION = 1
MESSAGE_CHARS = 400
MAX_EXAMPLES = 5  # items whose label or prediction could not be read, named in the file
# Distinct values of one slice field measured separately; further values share OTHER.
MAX_SLICE_VALUES = 100
OTHER = "(other)"
MISSING = "(none)"
# The headline of each task: the metric status.evaluation shows, and whether higher is better.
HEADLINE = {
    EvaluationTask.CLASSIFICATION: "accuracy",
    EvaluationTask.BINARY: "rocAuc",
    EvaluationTask.MULTILABEL: "f1Micro",
    EvaluationTask.REGRESSION: "rmse",
}


def new_metrics(spec: EvaluationSpec) -> Metrics:
    if spec.task is EvaluationTask.CLASSIFICATION:
        return ClassificationMetrics(spec.class_names, spec.top_k)
    if spec.task is EvaluationTask.BINARY:
        return BinaryMetrics(spec.cutoff, spec.positive_label)
    if spec.task is EvaluationTask.MULTILABEL:
        return MultilabelMetrics(spec.cutoff, spec.class_names)
    return RegressionMetrics()


def headline_value(spec: EvaluationSpec, metrics: dict[str, Any]) -> float | None:
    """The headline metric's value in a metrics dict (None when undefined, e.g. one class)."""
    if spec.task is EvaluationTask.MULTILABEL:
        value = metrics.get("averages", {}).get("micro", {}).get("f1")
    else:
        value = metrics.get(HEADLINE[spec.task])
    return None if value is None else float(value)


class _Evaluation:
    def __init__(self, spec: EvaluationSpec) -> None:
        self.spec = spec
        self.overall = new_metrics(spec)
        self.slices: dict[str, dict[str, Metrics]] = {f: {} for f in spec.slice_by}
        self.counts: Counter[str] = Counter()
        self.unusable_examples: list[str] = []

    def prediction(self, row: dict[str, Any], labelled: Labelled | None) -> None:
        self.counts["predicted"] += 1
        if labelled is None:
            label = row.get(self.spec.labels.field)
            slice_values = {f: row.get(f) for f in self.spec.slice_by}
        else:
            label = labelled.label
            # A slice field the predictions carry wins; else the labels dataset's.
            slice_values = {
                f: labelled.slices.get(f) if row.get(f) is None else row.get(f)
                for f in self.spec.slice_by
            }
        if label is None:
            self.counts["unlabelled"] += 1
            return
        prediction = row.get(self.spec.prediction)
        if prediction is None:
            self._unusable(row, f"no field {self.spec.prediction!r} in the prediction")
            return
        try:
            self.overall.add(label, prediction)
        except UnusableValueError as error:
            self._unusable(row, str(error))
            return
        self.counts["scored"] += 1
        for f, value in slice_values.items():
            self._slice(f, value).add(label, prediction)

    def _unusable(self, row: dict[str, Any], why: str) -> None:
        self.counts["unusable"] += 1
        if len(self.unusable_examples) < MAX_EXAMPLES:
            self.unusable_examples.append(f"{row.get('id')}: {why}")

    def _slice(self, field: str, value: Any) -> Metrics:
        key = MISSING if value is None else str(value)
        values = self.slices[field]
        if key not in values and len(values) >= MAX_SLICE_VALUES:
            key = OTHER
        if key not in values:
            values[key] = new_metrics(self.spec)
        return values[key]

    def bucket(self, part: Bucket, *, joined: bool) -> None:
        labels = part.labels
        for row in part.predictions:
            labelled = labels.pop(str(row.get("id")), None) if joined else None
            if joined and labelled is None:
                labelled = Labelled(None, {})
            self.prediction(row, labelled)
        for item_id in part.failed_ids:
            self.counts["failed"] += 1
            if joined and labels.pop(item_id, None) is not None:
                self.counts["failedLabelled"] += 1
        if joined:
            self.counts["labelsWithoutItem"] += len(labels)
            labels.clear()  # the next bucket's labels replace these

    def result(self, total: int) -> dict[str, Any]:
        metrics = self.overall.result() if self.overall.scored else {}
        scored = self.counts["scored"]
        counts = {
            "items": total,
            "predicted": self.counts["predicted"],
            "failed": self.counts["failed"],
            "scored": scored,
            "unlabelled": self.counts["unlabelled"],
            "unusable": self.counts["unusable"],
        }
        if self.spec.labels.dataset is not None:
            counts["failedLabelled"] = self.counts["failedLabelled"]
            counts["labelsWithoutItem"] = self.counts["labelsWithoutItem"]
        value = headline_value(self.spec, metrics)
        return {
            "schemaVersion": SCHEMA_VERSION,
            "task": self.spec.task.value,
            "spec": self.spec.to_wire(),
            "specKey": self.spec.key(),
            "headline": {"metric": HEADLINE[self.spec.task], "value": value},
            "labelCoverage": scored / total if total else 0.0,
            "counts": counts,
            "unusableExamples": self.unusable_examples,
            "metrics": metrics,
            "slices": {
                f: {
                    value: {"scored": m.scored, **m.result()} for value, m in sorted(values.items())
                }
                for f, values in self.slices.items()
            },
            "evaluatedAt": datetime.now(UTC).isoformat(),
        }


def evaluate_run(
    outputs: RunOutputs, spec: EvaluationSpec, work_dir: str | None = None
) -> dict[str, Any]:
    """Measure the finished run at `outputs` and write its evaluation.json; returns it."""
    manifest = outputs.manifest()
    if manifest is None:
        raise FileNotFoundError(
            f"{outputs.uri} has no manifest.json: the run has not finished, nothing to evaluate"
        )
    total = int(manifest.get("total", 0))
    evaluation = _Evaluation(spec)
    joined = spec.labels.dataset is not None
    if joined:
        for part in buckets(outputs, spec, total, work_dir):
            evaluation.bucket(part, joined=True)
    else:
        failed_ids = (str(r["id"]) for r in outputs.failures())
        evaluation.bucket(Bucket({}, outputs.predictions(), failed_ids), joined=False)
    result = evaluation.result(total)
    outputs.write_evaluation(result)
    return result


def evaluate_or_explain(uri: str, spec: EvaluationSpec) -> dict[str, Any]:
    """Evaluate the run at `uri`; the summary for status.evaluation, or why it failed (labels
    missing, unreadable...): a failed evaluation never fails the run's predictions."""
    outputs = RunOutputs(uri)
    try:
        result = evaluate_run(outputs, spec)
    except Exception as error:  # noqa: BLE001 (any cause is reported, the run stands)
        log.warning("evaluation failed: %s: %s", type(error).__name__, error)
        message = f"{type(error).__name__}: {error}"[:MESSAGE_CHARS]
        return {"state": "Failed", "specKey": spec.key(), "message": message}
    return summary(result, outputs.layout.url(outputs.evaluation_path))


def summary(result: dict[str, Any], uri: str) -> dict[str, Any]:
    """What status.evaluation shows (a few hundred bytes: it rides in a termination message)."""
    counts = result["counts"]
    headline = result["headline"]
    value = headline["value"]
    shown = "n/a" if value is None else f"{value:.4f}"
    return {
        "state": "Evaluated",
        "summary": f"{headline['metric']}={shown}",
        "specKey": result["specKey"],
        "metric": headline["metric"],
        "value": headline["value"],
        "scored": counts["scored"],
        "unlabelled": counts["unlabelled"] + counts["unusable"],
        "failed": counts["failed"],
        "labelCoverage": round(float(result["labelCoverage"]), 4),
        "uri": uri,
    }
