"""`make demo`'s path on the test cluster: the operator installed with the chart from the image
(namespaced to the test's namespace), the digits model trained and served by real Triton, the
images on S3 (moto's server), the BatchPrediction from examples/demo with its plan, shard and
finalize pods in containers from the image under Pod Security "restricted", and the report. The
accuracy it reports must be what the model scores when computed here independently, and the
corrupt files must fail alone, with clear messages."""

from __future__ import annotations

import re
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from demo import digits
from demo.__main__ import Clock, DemoRun, run_demo, serve_model
from demo.platform import (
    Kube,
    containers_possible,
    install_crds,
    install_operator,
    prepare_namespace,
    uninstall_operator,
)
from tests.harness.fixtures import Cluster

pytestmark = pytest.mark.chart


@dataclass
class Demo:
    run: DemoRun
    printed: str
    pods: list[dict[str, Any]]  # the namespace's pods when the run had ended


@pytest.fixture
def demo_run(
    cluster: Cluster, namespace: str, image: dict[str, Any], tmp_path: Path
) -> Iterator[Demo]:
    """The demo, run once against the session's cluster, its pods in containers."""
    if not cluster.local:
        pytest.skip("the demo's pods reach Triton and S3 on this machine's loopback")
    started = time.monotonic()
    kube = Kube(cluster.kubeconfig, tmp_path / "helm-home")
    assert containers_possible(kube) is None
    prepare_namespace(kube, namespace, containers=True)
    printed: list[str] = []
    clock = Clock(printed.append)
    served = serve_model(tmp_path, clock)
    try:
        install_crds(kube)
        # Its own release name: cluster-wide objects (the worker ClusterRole, the started-by
        # policy) are named after it and must not meet those of other tiers.
        release = f"demo-{uuid.uuid4().hex[:6]}"
        install_operator(
            kube, tmp_path, namespace=namespace, watch_namespaces=[namespace], release=release
        )
        try:
            run = run_demo(kube, tmp_path, namespace, clock, served)
            pods = cluster.get("pods", namespace=namespace)["items"]
            print("\n".join(printed))
            print(f"demo wall time in containers: {time.monotonic() - started:.1f} s")
            yield Demo(run, "\n".join(printed), pods)
        finally:
            uninstall_operator(kube, namespace, release)
    finally:
        served.stop()


def _independent_predictions(workdir: Path) -> dict[str, int]:
    """The saved model's class for every PNG, decoded here with Pillow (no Triton, no worker)."""
    weights = dict(np.load(workdir / "model-repository" / "digits" / "1" / "weights.npz"))
    paths = sorted((workdir / "data" / "images").glob("digit-*.png"))
    pixels = np.stack([np.asarray(Image.open(path).convert("L")) for path in paths])
    predicted = digits.predict(weights, digits.features(pixels))
    return {path.name: int(p) for path, p in zip(paths, predicted, strict=True)}


def _sklearn_held_out_score() -> float:
    """The same training, scored by scikit-learn itself on the held-out split."""
    from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]  # noqa: PLC0415
    from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]  # noqa: PLC0415

    pixels, labels = digits.load_pixels()
    held_out = digits.split(labels)
    x = digits.features(pixels)
    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=digits.SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x[~held_out], labels[~held_out])
    return float(model.score(x[held_out], labels[held_out]))


# 1,800 images through S3 and six pods, each a Python start in a container: 2 to 7 minutes on
# a 2-core machine shared with other work (390 s at load average 18), over the 600 s default.
@pytest.mark.timeout(900)
def test_demo_reports_the_accuracy_the_model_scores_and_the_corrupt_files(
    demo_run: Demo, tmp_path: Path
) -> None:
    run, printed = demo_run.run, demo_run.printed
    # Every pod (the operator, plan, shards, finalize) ran in a container from the image.
    ids = {
        p["metadata"]["name"]: [
            s.get("containerID", "") for s in p.get("status", {}).get("containerStatuses") or []
        ]
        for p in demo_run.pods
    }
    roles = {p["metadata"].get("labels", {}).get("batchpredict.io/role") for p in demo_run.pods}
    assert {"plan", "shards", "finalize"} <= roles, ids
    assert any(name.startswith("demo-") for name in ids), ids  # the operator's
    assert all(i.startswith("runc://") for pod_ids in ids.values() for i in pod_ids if i), ids
    assert all(pod_ids for pod_ids in ids.values()), ids
    status = run.status
    assert status["phase"] == "PartiallySucceeded", status
    total = 1797 + len(digits.CORRUPT_FILES)
    assert status["items"]["total"] == total
    assert status["items"]["succeeded"] == 1797
    assert status["items"]["failed"] == len(digits.CORRUPT_FILES)

    # Every image was predicted, by the model Triton served, exactly as computed here.
    expected = _independent_predictions(tmp_path)
    got = {item: row["digit"] for item, row in run.results.predictions.items()}
    assert got == expected

    labels = digits.read_labels(tmp_path / "data" / "labels.csv")
    held_out = [item for item, (_, split) in labels.items() if split == "test"]
    true_accuracy = sum(expected[i] == labels[i][0] for i in held_out) / len(held_out)
    accuracy, scored = run.results.accuracy("test")
    assert scored == len(held_out) == 540
    assert accuracy == true_accuracy
    assert accuracy > 0.9
    shown = re.search(r"accuracy on the 540 held-out test images: ([0-9.]+)", printed)
    assert shown, printed
    assert float(shown.group(1)) == pytest.approx(true_accuracy, abs=5e-5)
    # The operator measured it (status.evaluation, evaluation.json), not the demo.
    all_accuracy = sum(expected[i] == label for i, (label, _) in labels.items()) / len(labels)
    assert status["evaluation"]["metric"] == "accuracy"
    assert status["evaluation"]["value"] == pytest.approx(all_accuracy)
    assert status["evaluation"]["scored"] == 1797
    assert run.results.evaluation["counts"]["failed"] == len(digits.CORRUPT_FILES)
    assert run.results.evaluation["counts"]["failedLabelled"] == 0
    assert f"status.evaluation accuracy={all_accuracy:.4f}" in printed
    # scikit-learn's own score of the same training (float64) agrees to within an image or two.
    assert abs(_sklearn_held_out_score() - true_accuracy) <= 2 / 540

    # The corrupt files failed alone, each with a message naming it, in status and in storage.
    corrupt = set(digits.CORRUPT_FILES)
    failed_items = {item["id"]: item for item in status["failedItems"]}
    assert set(failed_items) == corrupt
    for failure in run.results.failures:
        assert failure.id in corrupt
        assert failure.code == "UNREADABLE_ITEM"
        assert f"cannot decode image {failure.id}" in failure.message
        assert failed_items[failure.id]["code"] == "UNREADABLE_ITEM"
        assert failure.id in failed_items[failure.id]["message"]
        assert f"{failure.id}: UNREADABLE_ITEM: cannot decode image" in printed
    assert {f.id for f in run.results.failures} == corrupt
    assert run.results.manifest
