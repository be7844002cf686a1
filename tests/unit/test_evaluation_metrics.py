"""Every streaming metric against scikit-learn on the same data: ties, a class absent from
predictions, a class absent from labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import MultiLabelBinarizer

from batchpredict.evaluation.metrics import (
    SCORE_GRID,
    BinaryMetrics,
    ClassificationMetrics,
    MultilabelMetrics,
    RegressionMetrics,
    UnusableValueError,
    class_key,
)

RNG = np.random.default_rng(7)


def feed(metrics: Any, labels: list[Any], predictions: list[Any]) -> dict[str, Any]:
    for label, prediction in zip(labels, predictions, strict=True):
        metrics.add(label, prediction)
    result: dict[str, Any] = metrics.result()
    return result


def test_classification_matches_sklearn_with_a_class_never_predicted() -> None:
    y = RNG.integers(0, 5, 400).tolist()
    # class 4 is never predicted; class 5 is predicted but never a label
    p = [v if RNG.random() < 0.7 else int(RNG.integers(0, 4)) for v in y]
    p = [5 if i % 37 == 0 else v if v != 4 else 3 for i, v in enumerate(p)]
    result = feed(ClassificationMetrics(), y, p)
    labels = [0, 1, 2, 3, 4, 5]
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, p, labels=labels, zero_division=0
    )
    for i, c in enumerate(labels):
        row = result["perClass"][str(c)]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i]
    for average in ("macro", "weighted"):
        expected = skm.precision_recall_fscore_support(
            y, p, labels=labels, average=average, zero_division=0
        )
        got = result["averages"][average]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx(expected[:3])
    assert result["confusionMatrix"]["labels"] == [str(c) for c in labels]
    assert result["confusionMatrix"]["matrix"] == skm.confusion_matrix(y, p, labels=labels).tolist()
    assert "topK" not in result  # a plain class ranks nothing


def test_top_k_from_scores_and_from_ranked_lists_matches_sklearn() -> None:
    y = RNG.integers(0, 6, 300)
    scores = RNG.random((300, 6))
    for k in (1, 2, 3):
        expected = skm.top_k_accuracy_score(y, scores, k=k, labels=list(range(6)))
        from_scores = feed(ClassificationMetrics(top_k=[k]), y.tolist(), scores.tolist())
        ranked = np.argsort(-scores, axis=1)[:, :3].tolist()  # the `topk` postprocess, k=3
        from_ranked = feed(ClassificationMetrics(top_k=[k]), y.tolist(), ranked)
        assert from_scores["topK"][str(k)] == pytest.approx(expected)
        assert from_ranked["topK"][str(k)] == pytest.approx(expected)
        assert from_scores["accuracy"] == pytest.approx(
            skm.accuracy_score(y, scores.argmax(axis=1))
        )


def test_class_names_and_label_spellings() -> None:
    names = ["cat", "dog"]
    result = feed(ClassificationMetrics(names), ["cat", 1, "dog", 0.0], [0, 1, 0, 0])
    assert result["accuracy"] == 0.75
    assert result["confusionMatrix"] == {"labels": ["cat", "dog"], "matrix": [[2, 0], [1, 1]]}
    assert class_key(3.0) == class_key("3") == class_key(3) == "3"
    with pytest.raises(UnusableValueError):
        class_key(2.5)
    with pytest.raises(UnusableValueError):
        ClassificationMetrics().add({"a": 1}, 1)


@pytest.mark.parametrize("case", ["continuous", "ties", "grid"])
def test_binary_matches_sklearn(case: str) -> None:
    n = 2000
    y = RNG.integers(0, 2, n)
    if case == "continuous":
        scores = np.clip(RNG.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    elif case == "ties":
        scores = RNG.integers(0, 5, n) / 4 * 0.5 + 0.25 * y * RNG.integers(0, 2, n)
    else:
        scores = np.round(RNG.random(n) * 0.6 + 0.4 * y, 3)
    result = feed(BinaryMetrics(0.5), y.tolist(), scores.tolist())
    tolerance = 1e-4 if case == "continuous" else 1e-12  # exact on the score grid
    assert result["rocAuc"] == pytest.approx(skm.roc_auc_score(y, scores), abs=tolerance)
    assert result["prAuc"] == pytest.approx(skm.average_precision_score(y, scores), abs=tolerance)
    predicted = (scores >= 0.5).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    assert result["confusionMatrix"]["matrix"] == [[tn, fp], [fn, tp]]
    assert result["sensitivity"] == pytest.approx(skm.recall_score(y, predicted))
    assert result["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - predicted))
    assert result["precision"] == pytest.approx(skm.precision_score(y, predicted))
    assert result["f1"] == pytest.approx(skm.f1_score(y, predicted))
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    # the best threshold: the largest TPR - FPR over scikit-learn's ROC curve
    fpr, tpr, _ = skm.roc_curve(y, scores)
    best = result["bestThreshold"]
    assert best["youden"] == pytest.approx(float(np.max(tpr - fpr)), abs=tolerance * 10)
    at_best = (scores >= best["threshold"] - SCORE_GRID / 2).astype(int)
    assert skm.recall_score(y, at_best) == pytest.approx(best["sensitivity"], abs=1e-3)


def test_binary_labels_vectors_and_one_class() -> None:
    # a 2-vector's last entry is the positive score; "true" is positive when positiveLabel is 1
    result = feed(BinaryMetrics(0.5), ["true", 0, "1", False], [[0.2, 0.8], 0.1, 0.7, [0.6, 0.4]])
    assert result["accuracy"] == 1.0
    only_positives = feed(BinaryMetrics(0.5), [1, 1], [0.4, 0.9])
    assert only_positives["rocAuc"] is None  # undefined, like scikit-learn's error
    assert only_positives["prAuc"] == pytest.approx(skm.average_precision_score([1, 1], [0.4, 0.9]))
    custom = feed(BinaryMetrics(0.5, positive_label="malignant"), ["malignant", "benign"], [1, 0])
    assert custom["positives"] == 1
    with pytest.raises(UnusableValueError):
        BinaryMetrics(0.5).add(1, "high")


def test_binary_scores_beyond_the_grid_stay_bounded() -> None:
    metrics = BinaryMetrics(0.0, max_steps=5000)
    y = RNG.integers(0, 2, 50_000)
    logits = RNG.normal(0, 1000, 50_000) + 500 * y
    feed(metrics, y.tolist(), logits.tolist())
    assert len(metrics.steps) <= 5000
    assert metrics.grid > SCORE_GRID
    assert metrics.result()["rocAuc"] == pytest.approx(skm.roc_auc_score(y, logits), abs=1e-3)


def test_multilabel_matches_sklearn() -> None:
    n, classes = 300, 5
    truth = [sorted({int(c) for c in RNG.choice(classes, RNG.integers(0, 3))}) for _ in range(n)]
    scores = RNG.random((n, classes))
    for i, labels in enumerate(truth):
        scores[i, labels] += 0.4
    scores[:, 4] = 0.1  # class 4 is never predicted
    result = feed(MultilabelMetrics(0.6), truth, scores.tolist())
    binarizer = MultiLabelBinarizer(classes=list(range(classes)))
    y = binarizer.fit_transform(truth)
    p = (scores >= 0.6).astype(int)
    assert result["subsetAccuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert result["hammingLoss"] == pytest.approx(skm.hamming_loss(y, p))
    for average in ("micro", "macro", "weighted"):
        expected = skm.precision_recall_fscore_support(y, p, average=average, zero_division=0)
        got = result["averages"][average]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx(expected[:3])
    _, recall, _, support = skm.precision_recall_fscore_support(y, p, zero_division=0)
    assert [result["perClass"][str(c)]["recall"] for c in range(classes)] == pytest.approx(recall)
    assert [result["perClass"][str(c)]["support"] for c in range(classes)] == support.tolist()
    # a list of predicted classes works the same as thresholded scores
    as_lists = [[j for j in range(classes) if row[j]] for row in p]
    assert feed(MultilabelMetrics(0.6), truth, as_lists)["averages"] == result["averages"]


def test_regression_matches_sklearn() -> None:
    y = RNG.normal(10, 3, 1000)
    p = y + RNG.normal(0, 1, 1000)
    result = feed(RegressionMetrics(), y.tolist(), [[v] for v in p.tolist()])
    assert result["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert result["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
    assert result["r2"] == pytest.approx(skm.r2_score(y, p))
    constant = feed(RegressionMetrics(), [2.0, 2.0], [2.0, 2.0])
    assert constant["r2"] == skm.r2_score([2.0, 2.0], [2.0, 2.0])
    with pytest.raises(UnusableValueError):
        RegressionMetrics().add("n/a", 1.0)
