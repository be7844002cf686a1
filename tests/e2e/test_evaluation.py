"""Validations: a run measures the model against labels when it ends (status.evaluation, the
`-o wide` column, evaluation.json, Prometheus), and a finished run is re-validated against
corrected labels from its files alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchpredict.io.results import RunOutputs
from tests.e2e.conftest import (
    OperatorProcess,
    assert_run_truth,
    batch_prediction,
    child_job,
    get_bp,
    wait_for_phase,
    wait_until,
)
from tests.harness.fixtures import Cluster
from tests.harness.triton_server import TritonHandle

ITEMS = 400
# `classify` scores class int(x) % 4 highest; its ranked top 2 classes are kept as `top`.
CLASSIFY: dict[str, Any] = {
    "model": {
        "name": "classify",
        "outputs": [{"name": "scores", "field": "top", "postprocess": "topk", "k": 2}],
    },
    "batching": {"batchSize": 16, "concurrency": 1},
    "shards": 2,
}


def truth(n: int) -> int:
    return n % 4


def noisy_label(n: int) -> int:
    """Wrong for every 5th item (one of them, 0, has no label at all)."""
    return (n + 1) % 4 if n % 5 == 0 else n % 4


def test_labels_in_the_items(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    dataset = tmp_path / "items.jsonl"
    with dataset.open("w") as out:
        for n in range(ITEMS):
            label = None if n == 0 else noisy_label(n)
            out.write(json.dumps({"id": f"item-{n}", "x": n, "label": label, "site": n % 2}) + "\n")
    output = tmp_path / "out"
    evaluation = {"task": "classification", "prediction": "top", "topK": [2], "sliceBy": ["site"]}
    bp = batch_prediction(
        "scored", triton_server, dataset, output, **CLASSIFY, evaluation=evaluation
    )
    cluster.apply(bp, namespace)
    body = wait_for_phase(
        cluster, name="scored", namespace=namespace, phases={"Succeeded"}, operator=operator_process
    )
    assert_run_truth(cluster, "scored", namespace, output, ITEMS)
    labelled = list(range(1, ITEMS))
    correct = sum(noisy_label(n) == truth(n) for n in labelled)
    accuracy = correct / len(labelled)
    shown = body["status"]["evaluation"]
    assert shown["state"] == "Evaluated"
    assert shown["metric"] == "accuracy"
    assert abs(shown["value"] - accuracy) < 1e-9
    assert (shown["scored"], shown["unlabelled"], shown["failed"]) == (ITEMS - 1, 1, 0)
    assert abs(shown["labelCoverage"] - (ITEMS - 1) / ITEMS) < 1e-4
    assert shown["uri"] == f"{output}/evaluation.json"

    # the one reader of a run's outputs reads what finalize wrote beside the manifest
    result = RunOutputs(str(output)).evaluation()
    assert result is not None
    assert result["counts"] == {
        "items": ITEMS,
        "predicted": ITEMS,
        "failed": 0,
        "scored": ITEMS - 1,
        "unlabelled": 1,
        "unusable": 0,
    }
    # `classify` ranks class 3 second (2 when 3 is first): a wrong label there is a top-2 hit
    top2 = sum(noisy_label(n) in (truth(n), 3 if truth(n) != 3 else 2) for n in labelled)
    assert abs(result["metrics"]["topK"]["2"] - top2 / len(labelled)) < 1e-9
    assert result["metrics"]["perClass"]["0"]["support"] == sum(
        noisy_label(n) == 0 for n in labelled
    )
    assert sorted(result["slices"]["site"]) == ["0", "1"]

    wide = cluster.kubectl("get", "bp", "scored", "-n", namespace, "-o", "wide").stdout
    assert "EVALUATION" in wide
    assert f"accuracy={accuracy:.4f}" in wide
    metrics = operator_process.metrics()
    assert (
        f'batchpredict_evaluation{{metric="accuracy",name="scored",namespace="{namespace}"}}'
        in metrics
    )


def test_a_labels_file_then_revalidation_with_corrected_labels(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    dataset = tmp_path / "items.jsonl"
    with dataset.open("w") as out:
        for n in range(ITEMS):
            x: Any = "not a number" if n == 7 else n  # item-7 fails: counted, not dropped
            out.write(json.dumps({"id": f"item-{n}", "x": x}) + "\n")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "item,diagnosis,scanner\n"
        + "".join(f"item-{n},{noisy_label(n)},{'A' if n < 100 else 'B'}\n" for n in range(ITEMS))
    )
    output = tmp_path / "out"
    evaluation: dict[str, Any] = {
        "task": "classification",
        "prediction": "top",
        "sliceBy": ["scanner"],
        "labels": {
            "field": "diagnosis",
            "dataset": {"uri": str(labels), "format": "csv", "idField": "item"},
        },
    }
    bp = batch_prediction(
        "joined", triton_server, dataset, output, **CLASSIFY, evaluation=evaluation
    )
    cluster.apply(bp, namespace)
    body = wait_for_phase(
        cluster,
        name="joined",
        namespace=namespace,
        phases={"PartiallySucceeded"},
        operator=operator_process,
    )
    assert_run_truth(cluster, "joined", namespace, output, ITEMS)
    scored = [n for n in range(ITEMS) if n != 7]
    accuracy = sum(noisy_label(n) == truth(n) for n in scored) / len(scored)
    shown = body["status"]["evaluation"]
    assert abs(shown["value"] - accuracy) < 1e-9
    assert (shown["scored"], shown["failed"]) == (ITEMS - 1, 1)
    first = RunOutputs(str(output)).evaluation()
    assert first is not None
    assert first["counts"]["failedLabelled"] == 1
    assert first["counts"]["labelsWithoutItem"] == 0
    assert first["slices"]["scanner"]["A"]["scored"] == 99

    # Corrected labels: edit spec.evaluation of the finished run; only an evaluate step runs.
    corrected = tmp_path / "corrected.csv"
    corrected.write_text(
        "item,diagnosis\n" + "".join(f"item-{n},{truth(n)}\n" for n in range(ITEMS))
    )
    evaluation["labels"]["dataset"]["uri"] = str(corrected)
    evaluation["sliceBy"] = []
    cluster.kubectl(
        "patch",
        "bp",
        "joined",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"evaluation": evaluation}}),
    )
    status = wait_until(
        cluster,
        "joined",
        namespace,
        lambda s: (s.get("evaluation") or {}).get("value") == 1.0,
        "the re-validation's accuracy of 1.0",
        timeout=120,
    )
    assert status["evaluation"]["state"] == "Evaluated"
    assert status["phase"] == "PartiallySucceeded"
    assert status["completionTime"] == body["status"]["completionTime"]
    assert status["items"] == body["status"]["items"], "nothing was predicted again"
    again = RunOutputs(str(output)).evaluation()
    assert again is not None
    assert again["metrics"]["accuracy"] == 1.0
    assert again["spec"]["labels"]["dataset"]["uri"] == str(corrected)
    jobs = sorted(j["metadata"]["name"] for j in cluster.get("jobs", namespace=namespace)["items"])
    key = status["evaluation"]["specKey"]
    assert jobs == sorted(
        child_job(cluster, "joined", namespace, step)
        for step in ("finalize", "plan", "r0", f"eval-{key}")
    )
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=joined"
    ).stdout
    assert "Revalidated" in events
    assert_run_truth(cluster, "joined", namespace, output, ITEMS)
    assert get_bp(cluster, "joined", namespace)["status"]["evaluation"]["value"] == 1.0
