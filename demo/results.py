"""What the demo's run produced, read from its output files; the accuracy is the one the
operator measured (evaluation.json, read by the product's own reader)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchpredict.io.results import RunOutputs
from demo.digits import read_labels


@dataclass(frozen=True)
class Failure:
    id: str
    code: str
    message: str


@dataclass(frozen=True)
class RunResults:
    """Predictions joined with labels: counts, accuracy per split, failures and a sample."""

    output: Path
    manifest: dict[str, Any]
    predictions: dict[str, dict[str, Any]]
    failures: list[Failure]
    labels: dict[str, tuple[int, str]] = field(repr=False)
    evaluation: dict[str, Any] = field(repr=False)

    def accuracy(self, split: str | None = None) -> tuple[float, int]:
        """(accuracy, items scored) as the operator measured them, of one split or all."""
        if split is None:
            return self.evaluation["metrics"]["accuracy"], self.evaluation["counts"]["scored"]
        part = self.evaluation["slices"]["split"][split]
        return part["accuracy"], part["scored"]

    def sample(self, count: int) -> list[tuple[str, int, int, float]]:
        """(id, predicted, label, probability) of the first `count` held-out images."""
        rows = []
        for item in sorted(self.predictions):
            label = self.labels.get(item)
            if label is None or label[1] != "test":
                continue
            prediction = self.predictions[item]
            rows.append((item, prediction["digit"], label[0], prediction["top3_scores"][0]))
            if len(rows) == count:
                break
        return rows


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_results(output: Path, labels_path: Path) -> RunResults:
    """Read manifest.json, predictions.jsonl (the combined file) and failures.jsonl."""
    manifest = json.loads((output / "manifest.json").read_text())
    predictions = {row["id"]: row for row in _jsonl(output / "predictions.jsonl")}
    failures_path = output / "failures.jsonl"
    failures = [
        Failure(row["id"], row["code"], row["message"])
        for row in (_jsonl(failures_path) if failures_path.exists() else [])
    ]
    evaluation = RunOutputs(str(output)).evaluation() or {}
    return RunResults(output, manifest, predictions, failures, read_labels(labels_path), evaluation)
