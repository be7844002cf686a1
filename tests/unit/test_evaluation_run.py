"""A finished run's evaluation from its files: labels in the items or in a labels dataset
(joined in buckets), missing labels and failed items counted, slices, evaluation.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn import metrics as skm

from batchpredict.api.v1alpha1.evaluation import EvaluationSpec
from batchpredict.evaluation import labels as labels_module
from batchpredict.evaluation.evaluate import evaluate_or_explain, evaluate_run
from batchpredict.io.layout import OutputLayout
from batchpredict.io.results import RunOutputs

N = 600


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run(root: Path, fmt: str = "jsonl") -> dict[str, Any]:
    """A finished run of N items: ids i0..; every 10th failed; every 7th prediction without
    a label; labels 0..3 with class 3 never predicted; a `site` field."""
    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    layout = OutputLayout(str(root))
    (root / "plan.json").write_text(json.dumps({"total": N, "shards": 2}))
    truth = rng.integers(0, 4, N)
    predicted = np.where(rng.random(N) < 0.8, truth, rng.integers(0, 3, N))
    predicted[predicted == 3] = 2
    rows, failures = [], []
    for i in range(N):
        if i % 10 == 0:
            failures.append(
                {
                    "id": f"i{i}",
                    "code": "BAD_INPUT",
                    "message": "m",
                    "attempts": 1,
                    "retryable": False,
                    "round": 0,
                    "shard": 0,
                    "position": i,
                }
            )
            continue
        label = None if i % 7 == 0 else int(truth[i])
        rows.append(
            {"id": f"i{i}", "label": label, "site": f"s{i % 3}", "digit": int(predicted[i])}
        )
    files = []
    for shard, part in enumerate((rows[: len(rows) // 2], rows[len(rows) // 2 :])):
        path = Path(layout.predictions_chunk(0, shard, 0, fmt))
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "jsonl":
            _jsonl(path, part)
        else:
            pq.write_table(pa.Table.from_pylist(part), path)
        files.append(layout.url(str(path)))
    _jsonl(root / "failures.jsonl", failures)
    manifest = {
        "total": N,
        "succeeded": len(rows),
        "failed": len(failures),
        "predictionFiles": files,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return {"truth": truth, "predicted": predicted, "rows": rows, "failures": failures}


def _scored(run: dict[str, Any]) -> tuple[list[int], list[int]]:
    rows = [r for r in run["rows"] if r["label"] is not None]
    return [r["label"] for r in rows], [r["digit"] for r in rows]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_labels_in_the_items(tmp_path: Path, fmt: str) -> None:
    run = _run(tmp_path, fmt)
    spec = EvaluationSpec(task="classification", prediction="digit", slice_by=["site"])
    result = evaluate_run(RunOutputs(str(tmp_path)), spec)
    y, p = _scored(run)
    assert result["metrics"]["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert result["counts"] == {
        "items": N,
        "predicted": 540,
        "failed": 60,
        "scored": len(y),
        "unlabelled": 540 - len(y),
        "unusable": 0,
    }
    assert result["labelCoverage"] == pytest.approx(len(y) / N)
    assert result["headline"] == {"metric": "accuracy", "value": result["metrics"]["accuracy"]}
    # class 3 is a label never predicted: recall 0, in the confusion matrix
    assert result["metrics"]["perClass"]["3"]["recall"] == 0.0
    assert result["metrics"]["confusionMatrix"]["labels"] == ["0", "1", "2", "3"]
    site1 = [
        (r["label"], r["digit"])
        for r in run["rows"]
        if r["label"] is not None and r["site"] == "s1"
    ]
    s1 = result["slices"]["site"]["s1"]
    assert s1["scored"] == len(site1)
    assert s1["accuracy"] == pytest.approx(skm.accuracy_score(*zip(*site1, strict=True)))
    # written beside the manifest, read back by the one reader
    assert RunOutputs(str(tmp_path)).evaluation() == json.loads(json.dumps(result))


@pytest.mark.parametrize("bucket_items", [10_000, 50])
def test_a_separate_labels_dataset_joined_by_id(
    tmp_path: Path, bucket_items: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(labels_module, "BUCKET_ITEMS", bucket_items)  # 50: 12 buckets
    run = _run(tmp_path / "out")
    # Corrected labels for every item (failed ones too), a site only here, 5 extra labels.
    labels = [{"item": f"i{i}", "y": int(run["truth"][i]), "site": f"s{i % 2}"} for i in range(N)]
    labels += [{"item": f"x{i}", "y": 0, "site": "s0"} for i in range(5)]
    del labels[1]  # item i1 (predicted) has no label
    path = tmp_path / "labels.csv"
    path.write_text(
        "item,y,site\n" + "".join(f"{r['item']},{r['y']},{r['site']}\n" for r in labels)
    )
    spec = EvaluationSpec.model_validate(
        {
            "task": "classification",
            "prediction": "digit",
            "sliceBy": ["site"],
            "labels": {
                "field": "y",
                "dataset": {"uri": str(path), "format": "csv", "idField": "item"},
            },
        }
    )
    result = evaluate_run(RunOutputs(str(tmp_path / "out")), spec)
    predicted = {r["id"]: r for r in run["rows"]}
    pairs = [
        (int(run["truth"][i]), predicted[f"i{i}"]["digit"])
        for i in range(N)
        if f"i{i}" in predicted and i != 1
    ]
    y, p = zip(*pairs, strict=True)
    assert result["metrics"]["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert result["counts"] == {
        "items": N,
        "predicted": 540,
        "failed": 60,
        "scored": 539,
        "unlabelled": 1,
        "unusable": 0,
        "failedLabelled": 60,
        "labelsWithoutItem": 5,
    }
    # the prediction rows carry `site` (s0..s2): they win over the labels dataset's
    assert sorted(result["slices"]["site"]) == ["s0", "s1", "s2"]


def test_unusable_predictions_are_counted_with_examples(tmp_path: Path) -> None:
    _run(tmp_path)
    spec = EvaluationSpec(task="regression", prediction="site")  # text is not a number
    result = evaluate_run(RunOutputs(str(tmp_path)), spec)
    assert (
        result["counts"]["unusable"]
        == result["counts"]["predicted"] - result["counts"]["unlabelled"]
    )
    assert result["counts"]["scored"] == 0
    assert result["headline"]["value"] is None
    assert "is not a number" in result["unusableExamples"][0]


def test_a_failed_evaluation_is_explained_not_raised(tmp_path: Path) -> None:
    _run(tmp_path)
    spec = EvaluationSpec.model_validate(
        {
            "task": "binary",
            "prediction": "digit",
            "labels": {
                "dataset": {"uri": str(tmp_path / "nope.csv"), "format": "csv", "idField": "id"}
            },
        }
    )
    summary = evaluate_or_explain(str(tmp_path), spec)
    assert summary["state"] == "Failed"
    assert "nope.csv" in summary["message"]
    assert summary["specKey"] == spec.key()
    ok = evaluate_or_explain(
        str(tmp_path), EvaluationSpec(task="classification", prediction="digit")
    )
    assert ok["state"] == "Evaluated"
    assert ok["summary"].startswith("accuracy=0.")
    assert len(json.dumps(ok)) < 600  # rides in the finalize pod's termination message


def test_an_unfinished_run_is_not_evaluated(tmp_path: Path) -> None:
    _run(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="has not finished"):
        evaluate_run(RunOutputs(str(tmp_path)), EvaluationSpec(task="regression", prediction="x"))
