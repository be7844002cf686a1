"""Streaming metrics: one accumulator per task, fed one (label, prediction) pair at a time.

Memory grows with the number of classes (and, for `binary`, with the score grid), never with
the number of items. Definitions follow scikit-learn (the unit tests compare with it):
precision, recall and F1 are 0 where undefined (its `zero_division=0`), averages `macro` and
`weighted` over the classes seen in labels or predictions, the confusion matrix has the true
class in rows. `binary` ranks scores on a grid of SCORE_GRID (see BinaryMetrics).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

# Binary scores are counted per step of this size: AUCs are exact for scores on the grid and
# otherwise differ from scikit-learn's by at most the share of (positive, negative) pairs
# whose scores fall into one step, halved (for probabilities: below 1e-4 in practice).
SCORE_GRID = 1e-5
# Scores spread wider than this many steps (logits over a large range) double the step until
# they fit: the table stays bounded whatever the scores.
MAX_SCORE_STEPS = 200_000
# Per-class tables beyond this many classes are left out of evaluation.json (the averages
# still count every class).
MAX_LISTED_CLASSES = 1000


class UnusableValueError(ValueError):
    """A label or prediction this task cannot read (the item is counted as unusable)."""


class Metrics(Protocol):
    scored: int

    def add(self, label: Any, prediction: Any) -> None: ...

    def result(self) -> dict[str, Any]: ...


def class_key(value: Any, names: Sequence[str] | None = None) -> str:
    """A class as text: 3, 3.0 and "3" are one class; index i is names[i] when named."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise UnusableValueError(f"{value} is not a class")
        value = int(value)
    if isinstance(value, int):
        if names is not None and 0 <= value < len(names):
            return names[value]
        return str(value)
    if isinstance(value, str):
        return value
    raise UnusableValueError(f"{value!r} is not a class")


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


def per_class_table(
    classes: Sequence[str], tp: Counter[str], fp: Counter[str], fn: Counter[str]
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per-class precision/recall/F1/support and their macro and weighted averages."""
    table: dict[str, dict[str, float]] = {}
    for c in classes:
        p, r = _ratio(tp[c], tp[c] + fp[c]), _ratio(tp[c], tp[c] + fn[c])
        table[c] = {"precision": p, "recall": r, "f1": _f1(p, r), "support": tp[c] + fn[c]}
    averages: dict[str, dict[str, float]] = {}
    support = sum(row["support"] for row in table.values())
    for name in ("macro", "weighted"):
        avg: dict[str, float] = {}
        for key in ("precision", "recall", "f1"):
            if name == "macro":
                avg[key] = _ratio(sum(row[key] for row in table.values()), len(table))
            else:
                avg[key] = _ratio(sum(row[key] * row["support"] for row in table.values()), support)
        avg["support"] = support
        averages[name] = avg
    return table, averages


class ClassificationMetrics:
    """Multi-class: accuracy, top-k accuracy, per-class table, averages, confusion matrix.

    A prediction is a class, a ranked list of classes (the `topk` postprocess: best first),
    or a vector of scores (one per class index: ranked here, highest first, ties by index)."""

    def __init__(self, class_names: Sequence[str] | None = None, top_k: Sequence[int] = (5,)):
        self.names = list(class_names) if class_names else None
        self.top_k = sorted(set(top_k))
        self.scored = 0
        self.correct = 0
        self.ranked = 0  # items whose prediction ranks classes (top-k is measured on them)
        self.top_hits: Counter[int] = Counter()
        self.confusion: Counter[tuple[str, str]] = Counter()

    def _ranking(self, prediction: Any) -> list[str] | None:
        if isinstance(prediction, (list, tuple, np.ndarray)):
            values = list(prediction)
            if not values:
                raise UnusableValueError("empty prediction")
            if all(isinstance(v, float) for v in values):
                order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")
                return [class_key(int(i), self.names) for i in order[: max(self.top_k, default=1)]]
            return [class_key(v, self.names) for v in values]
        return None

    def add(self, label: Any, prediction: Any) -> None:
        truth = class_key(label, self.names)
        ranking = self._ranking(prediction)
        predicted = ranking[0] if ranking is not None else class_key(prediction, self.names)
        self.scored += 1
        self.confusion[(truth, predicted)] += 1
        self.correct += truth == predicted
        if ranking is not None and len(prediction) > 1:
            self.ranked += 1
            for k in self.top_k:
                self.top_hits[k] += truth in ranking[:k]

    def result(self) -> dict[str, Any]:
        classes = sorted({c for pair in self.confusion for c in pair}, key=_class_order)
        tp: Counter[str] = Counter()
        fp: Counter[str] = Counter()
        fn: Counter[str] = Counter()
        for (truth, predicted), n in self.confusion.items():
            if truth == predicted:
                tp[truth] += n
            else:
                fp[predicted] += n
                fn[truth] += n
        table, averages = per_class_table(classes, tp, fp, fn)
        out: dict[str, Any] = {
            "accuracy": _ratio(self.correct, self.scored),
            "averages": averages,
        }
        if self.ranked:
            out["topK"] = {str(k): _ratio(self.top_hits[k], self.ranked) for k in self.top_k}
        if len(classes) <= MAX_LISTED_CLASSES:
            out["perClass"] = table
            out["confusionMatrix"] = {
                "labels": classes,
                "matrix": [[self.confusion[(t, p)] for p in classes] for t in classes],
            }
        return out


def _class_order(name: str) -> tuple[int, int, str]:
    """Numeric class names in numeric order, then the others alphabetically."""
    try:
        return (0, int(name), "")
    except ValueError:
        return (1, 0, name)


def binary_score(prediction: Any) -> float:
    """The positive score: a number, or the last entry of a score vector."""
    if isinstance(prediction, (list, tuple, np.ndarray)):
        if not len(prediction):
            raise UnusableValueError("empty prediction")
        prediction = prediction[-1]
    if isinstance(prediction, bool) or not isinstance(prediction, (int, float)):
        raise UnusableValueError(f"{prediction!r} is not a score")
    score = float(prediction)
    if not math.isfinite(score):
        raise UnusableValueError(f"{score} is not a finite score")
    return score


class BinaryMetrics:
    """Binary: counts at the threshold (score >= threshold is positive), ROC AUC, PR AUC
    (average precision) and the threshold of the best Youden index (TPR - FPR).

    The curves come from positive and negative counts per score step of SCORE_GRID (a bounded
    table, not a sort of every score): ties fall into one step, as in scikit-learn."""

    def __init__(
        self, threshold: float, positive_label: str = "1", max_steps: int = MAX_SCORE_STEPS
    ) -> None:
        self.threshold = threshold
        self.max_steps = max_steps
        self.positive = {positive_label} | ({"true", "True"} if positive_label == "1" else set())
        self.scored = 0
        self.tp = self.fp = self.tn = self.fn = 0
        self.grid = SCORE_GRID
        self.steps: dict[int, list[int]] = {}  # step -> [positives, negatives]

    def is_positive(self, label: Any) -> bool:
        if isinstance(label, (list, tuple, dict)) or label is None:
            raise UnusableValueError(f"{label!r} is not a binary label")
        return class_key(label) in self.positive

    def add(self, label: Any, prediction: Any) -> None:
        positive = self.is_positive(label)
        score = binary_score(prediction)
        self.scored += 1
        if score >= self.threshold:
            self.tp += positive
            self.fp += not positive
        else:
            self.fn += positive
            self.tn += not positive
        counts = self.steps.setdefault(round(score / self.grid), [0, 0])
        counts[0 if positive else 1] += 1
        if len(self.steps) > self.max_steps:
            self._coarsen()

    def _coarsen(self) -> None:
        merged: dict[int, list[int]] = {}
        for step, (pos, neg) in self.steps.items():
            counts = merged.setdefault(round(step / 2), [0, 0])
            counts[0] += pos
            counts[1] += neg
        self.steps, self.grid = merged, self.grid * 2

    def curves(self) -> dict[str, Any]:
        """ROC AUC, PR AUC and the best threshold from the per-step counts."""
        if not self.steps:
            return {}
        keys = np.array(sorted(self.steps, reverse=True), dtype=np.int64)
        pos = np.array([self.steps[k][0] for k in keys], dtype=np.float64)
        neg = np.array([self.steps[k][1] for k in keys], dtype=np.float64)
        tps, fps = np.cumsum(pos), np.cumsum(neg)
        total_pos, total_neg = tps[-1], fps[-1]
        out: dict[str, Any] = {"rocAuc": None, "prAuc": None, "bestThreshold": None}
        if total_pos and total_neg:
            tpr = np.concatenate([[0.0], tps / total_pos])
            fpr = np.concatenate([[0.0], fps / total_neg])
            out["rocAuc"] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
            youden = tpr[1:] - fpr[1:]
            best = int(np.argmax(youden))
            out["bestThreshold"] = {
                "threshold": float(keys[best] * self.grid),
                "youden": float(youden[best]),
                "sensitivity": float(tpr[best + 1]),
                "specificity": float(1 - fpr[best + 1]),
            }
        if total_pos:
            precision = tps / (tps + fps)
            recall = tps / total_pos
            out["prAuc"] = float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))
        return out

    def result(self) -> dict[str, Any]:
        sensitivity = _ratio(self.tp, self.tp + self.fn)
        precision = _ratio(self.tp, self.tp + self.fp)
        return {
            "threshold": self.threshold,
            "accuracy": _ratio(self.tp + self.tn, self.scored),
            "sensitivity": sensitivity,
            "specificity": _ratio(self.tn, self.tn + self.fp),
            "precision": precision,
            "f1": _f1(precision, sensitivity),
            "confusionMatrix": {
                "labels": ["negative", "positive"],
                "matrix": [[self.tn, self.fp], [self.fn, self.tp]],
            },
            "scoreGrid": self.grid,
            "positives": self.tp + self.fn,
            "negatives": self.tn + self.fp,
            **self.curves(),
        }


class MultilabelMetrics:
    """Multilabel: a label is a list of classes; a prediction a list of classes or a vector of
    scores (class index i is predicted when its score >= threshold). Subset accuracy, Hamming
    loss, micro/macro/weighted precision, recall and F1, per-class table."""

    def __init__(self, threshold: float, class_names: Sequence[str] | None = None) -> None:
        self.threshold = threshold
        self.names = list(class_names) if class_names else None
        self.scored = 0
        self.exact = 0
        self.wrong_pairs = 0  # labels predicted but absent, plus absent but predicted
        self.tp: Counter[str] = Counter()
        self.fp: Counter[str] = Counter()
        self.fn: Counter[str] = Counter()

    def _set(self, value: Any, *, scores: bool) -> set[str]:
        if not isinstance(value, (list, tuple, np.ndarray)):
            raise UnusableValueError(f"{value!r} is not a list of classes")
        values = list(value)
        if scores and values and all(isinstance(v, float) for v in values):
            return {class_key(i, self.names) for i, v in enumerate(values) if v >= self.threshold}
        return {class_key(v, self.names) for v in values}

    def add(self, label: Any, prediction: Any) -> None:
        truth = self._set(label, scores=False)
        predicted = self._set(prediction, scores=True)
        self.scored += 1
        self.exact += truth == predicted
        self.wrong_pairs += len(truth ^ predicted)
        self.tp.update(truth & predicted)
        self.fp.update(predicted - truth)
        self.fn.update(truth - predicted)

    def result(self) -> dict[str, Any]:
        classes = sorted(set(self.tp) | set(self.fp) | set(self.fn), key=_class_order)
        table, averages = per_class_table(classes, self.tp, self.fp, self.fn)
        tp, fp, fn = sum(self.tp.values()), sum(self.fp.values()), sum(self.fn.values())
        p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        averages["micro"] = {"precision": p, "recall": r, "f1": _f1(p, r), "support": tp + fn}
        out: dict[str, Any] = {
            "threshold": self.threshold,
            "subsetAccuracy": _ratio(self.exact, self.scored),
            "hammingLoss": _ratio(self.wrong_pairs, self.scored * len(classes)),
            "averages": averages,
        }
        if len(classes) <= MAX_LISTED_CLASSES:
            out["perClass"] = table
        return out


class RegressionMetrics:
    """MAE, RMSE and R² (Welford's running mean and variance of the labels)."""

    def __init__(self) -> None:
        self.scored = 0
        self.abs_error = 0.0
        self.sq_error = 0.0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, label: Any, prediction: Any) -> None:
        if isinstance(prediction, (list, tuple, np.ndarray)) and len(prediction) == 1:
            prediction = prediction[0]
        values = []
        for v in (label, prediction):
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise UnusableValueError(f"{v!r} is not a number")
            try:
                values.append(float(v))
            except ValueError:
                raise UnusableValueError(f"{v!r} is not a number") from None
        y, p = values
        if not (math.isfinite(y) and math.isfinite(p)):
            raise UnusableValueError("not a finite number")
        self.scored += 1
        error = p - y
        self.abs_error += abs(error)
        self.sq_error += error * error
        delta = y - self.mean
        self.mean += delta / self.scored
        self.m2 += delta * (y - self.mean)

    def result(self) -> dict[str, Any]:
        n = self.scored
        r2: float | None = None
        if n > 1:
            # scikit-learn: a constant label gives 1.0 for a perfect fit, else 0.0
            r2 = 1 - self.sq_error / self.m2 if self.m2 else (1.0 if not self.sq_error else 0.0)
        return {
            "mae": _ratio(self.abs_error, n),
            "rmse": math.sqrt(_ratio(self.sq_error, n)),
            "r2": r2,
            "labelMean": self.mean,
        }
