"""`make demo`'s path on the test cluster: the operator installed with the chart (namespaced to
the test's namespace), the digits model trained and served by real Triton, the BatchPrediction
from examples/demo, and the report. The accuracy it reports must be what the model scores when
computed here independently, and the corrupt files must fail alone, with clear messages."""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo import digits
from demo.__main__ import Clock, DemoRun, run_demo, serve_model
from demo.platform import Kube, install_crds, install_operator, uninstall_operator
from tests.harness.fixtures import Cluster

pytestmark = pytest.mark.chart


@pytest.fixture
def demo_run(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[tuple[DemoRun, str]]:
    """The demo, run once against the session's cluster; (the run, everything it printed)."""
    if not cluster.local:
        pytest.skip("the demo's pods read .demo/ files and reach Triton on this machine")
    kube = Kube(cluster.kubeconfig, tmp_path / "helm-home")
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
            yield run_demo(kube, tmp_path, namespace, clock, served), "\n".join(printed)
        finally:
            uninstall_operator(kube, namespace, release)
    finally:
        served.triton.stop()


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


def test_demo_reports_the_accuracy_the_model_scores_and_the_corrupt_files(
    demo_run: tuple[DemoRun, str], tmp_path: Path
) -> None:
    run, printed = demo_run
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
