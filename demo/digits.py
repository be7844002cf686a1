"""The demo's real model and data: scikit-learn's bundled digits (1,797 8x8 images, offline).

`prepare(workdir)` trains a small MLP on a fixed 70% split, saves its weights for the Triton
model in `demo/triton_model/digits`, and writes every image as a PNG (plus a few corrupt files)
with a labels file that says which images the model never saw in training.
"""

from __future__ import annotations

import csv
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

MODEL_NAME = "digits"
MODEL_SOURCE = Path(__file__).parent / "triton_model" / MODEL_NAME
SEED = 0
TEST_FRACTION = 0.3
# Files that are not images: each must fail alone, with a message naming it.
CORRUPT_FILES: dict[str, bytes] = {
    "corrupt-empty.png": b"",
    "corrupt-text.png": b"this is a text file with a .png name\n",
    # A PNG signature and the start of a header, then nothing.
    "corrupt-truncated.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x08",
}


@dataclass(frozen=True)
class Prepared:
    """What `prepare` wrote: the images directory, labels file and model repository."""

    images: Path
    labels: Path
    model_repository: Path
    items: int


def load_pixels() -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """The digits as 8-bit grayscale pixels (0..16 scaled to 0..255) and their labels."""
    # Imported here: scikit-learn takes seconds to import and only set-up needs it.
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]  # noqa: PLC0415

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return pixels, digits.target.astype(np.int64)


def features(pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
    """What the worker sends Triton for a PNG: mode L, scaled by 1/255 (see examples/demo)."""
    # float32 pixels times a float32 scale: the worker's arithmetic, to the last bit.
    return pixels.reshape(len(pixels), -1).astype(np.float32) * np.float32(1 / 255)


def split(labels: NDArray[np.int64]) -> NDArray[np.bool_]:
    """True for the held-out test images (stratified, fixed seed)."""
    from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]  # noqa: PLC0415

    index = np.arange(len(labels))
    _, test = train_test_split(index, test_size=TEST_FRACTION, random_state=SEED, stratify=labels)
    held_out = np.zeros(len(labels), dtype=bool)
    held_out[test] = True
    return held_out


def train(x: NDArray[np.float32], y: NDArray[np.int64]) -> dict[str, NDArray[Any]]:
    """Fit the MLP; its weights as the arrays model.py reads (w0, b0, w1, b1, layers)."""
    from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]  # noqa: PLC0415
    from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]  # noqa: PLC0415

    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=SEED)
    with warnings.catch_warnings():
        # 300 epochs reach ~97% held-out accuracy; converging fully only costs set-up time.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    weights: dict[str, NDArray[Any]] = {"layers": np.asarray(len(model.coefs_))}
    for i, (w, b) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        weights[f"w{i}"] = w.astype(np.float32)
        weights[f"b{i}"] = b.astype(np.float32)
    return weights


def predict(weights: dict[str, NDArray[Any]], x: NDArray[np.float32]) -> NDArray[np.int64]:
    """The classes model.py picks (the same arithmetic, without Triton)."""
    count = int(weights["layers"])
    out = x
    for i in range(count):
        out = out @ weights[f"w{i}"] + weights[f"b{i}"]
        if i < count - 1:
            out = np.maximum(out, 0)
    classes: NDArray[np.int64] = np.argmax(out, axis=1).astype(np.int64)
    return classes


def image_id(index: int) -> str:
    return f"digit-{index:04d}.png"


def write_images(dest: Path, pixels: NDArray[np.uint8]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(pixels):
        Image.fromarray(image, mode="L").save(dest / image_id(index))
    for name, data in CORRUPT_FILES.items():
        (dest / name).write_bytes(data)


def write_labels(path: Path, labels: NDArray[np.int64], held_out: NDArray[np.bool_]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "label", "split"])
        for index, (label, test) in enumerate(zip(labels, held_out, strict=True)):
            writer.writerow([image_id(index), int(label), "test" if test else "train"])


def read_labels(path: Path) -> dict[str, tuple[int, str]]:
    """id -> (label, split) from the labels file."""
    with path.open(newline="") as source:
        return {row["id"]: (int(row["label"]), row["split"]) for row in csv.DictReader(source)}


def write_model_repository(dest: Path, weights: dict[str, NDArray[Any]]) -> Path:
    """A Triton model repository holding the `digits` model with these weights."""
    model_dir = dest / MODEL_NAME
    shutil.copytree(MODEL_SOURCE, model_dir, dirs_exist_ok=True)
    np.savez(model_dir / "1" / "weights.npz", **weights)
    return dest


def prepare(workdir: Path) -> Prepared:
    """Train on the training split and write data, labels and model repository under workdir."""
    pixels, labels = load_pixels()
    held_out = split(labels)
    x = features(pixels)
    weights = train(x[~held_out], labels[~held_out])
    images = workdir / "data" / "images"
    if images.exists():  # a re-run starts from the same files, not a mix with old ones
        shutil.rmtree(images)
    write_images(images, pixels)
    labels_path = workdir / "data" / "labels.csv"
    write_labels(labels_path, labels, held_out)
    repository = write_model_repository(workdir / "model-repository", weights)
    return Prepared(images, labels_path, repository, len(pixels) + len(CORRUPT_FILES))
