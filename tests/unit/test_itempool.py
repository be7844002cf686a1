"""Preprocessing across cores: the pool's size from the cgroup, order and ids kept, items
that fail alone, threads for images, processes for a user's function, JPEG draft decoding."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

from batchpredict.api.v1alpha1.data import ImagePreprocess, Preprocess
from batchpredict.io.readers import SOURCE_FIELD, FileRef, ItemBatch
from batchpredict.triton.tensors import ITEM_FIELD, InputBinding
from batchpredict.worker.itempool import pod_cpus
from batchpredict.worker.preprocess import Prepared, Preprocessor, decode_image

CORES = len(os.sched_getaffinity(0))


def write(root: Path, name: str, text: str) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)


def test_pod_cpus_follow_the_cgroup_quota_within_the_affinity(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    write(v2, "cpu.max", "150000 100000\n")  # a limit of 1.5 CPUs: two workers
    assert pod_cpus(v2) == min(2, CORES)
    write(v2, "cpu.max", "max 100000\n")  # no limit: the cores it may run on
    assert pod_cpus(v2) == CORES
    v1 = tmp_path / "v1"
    write(v1, "cpu,cpuacct/cpu.cfs_quota_us", "100000\n")
    write(v1, "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert pod_cpus(v1) == 1
    write(v1, "cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    assert pod_cpus(v1) == CORES
    assert pod_cpus(tmp_path / "none") == CORES


def image_rows(tmp_path: Path, n: int, corrupt: set[int]) -> list[dict[str, object] | None]:
    rows: list[dict[str, object] | None] = []
    for i in range(n):
        path = tmp_path / f"img-{i:03d}.jpg"
        if i in corrupt:
            path.write_bytes(b"not an image")
        else:
            color = (i * 7 % 256, i * 13 % 256, i * 29 % 256)
            Image.new("RGB", (64, 48), color).save(path, quality=95)
        rows.append({"path": path.name, SOURCE_FIELD: FileRef(LocalFileSystem(), str(path))})
    return rows


def outcome(prepared: Prepared) -> tuple[dict[int, str], dict[int, list[float]]]:
    """Errors by index, and each item's tensor (rounded) by index."""
    values = {}
    for request in prepared.requests:
        for index, tensor in zip(request.indices.tolist(), request.tensors["image"], strict=True):
            values[index] = np.round(tensor.mean(axis=(0, 1)), 4).tolist()
    return {i: code for i, (code, _) in prepared.errors.items()}, values


def test_images_decode_in_threads_in_order_and_a_corrupt_one_fails_alone(tmp_path: Path) -> None:
    n, corrupt = 60, {3, 41}
    rows = image_rows(tmp_path, n, corrupt)
    binding = [InputBinding("image", ITEM_FIELD, "FP32", (8, 8, 3))]
    preprocess = Preprocess(image=ImagePreprocess(resize=[8, 8]))
    results = []
    for workers in (1, 4):
        pre = Preprocessor(binding, preprocess, [], batch_size=16, workers=workers)
        assert pre.pool.executor_kind == (None if workers == 1 else "threads")
        batches = [
            ItemBatch(
                np.arange(s, s + 20),
                pa.array([str(i) for i in range(s, s + 20)]),
                rows=rows[s : s + 20],
            )
            for s in range(0, n, 20)
        ]
        prepared = list(pre.prepare_all(batches))
        pre.close()
        assert [p.batch.positions.tolist() for p in prepared] == [
            list(range(s, s + 20)) for s in range(0, n, 20)
        ]
        merged = [outcome(p) for p in prepared]
        results.append(merged)
        errors = {i + 20 * b for b, (e, _) in enumerate(merged) for i in e}
        assert errors == corrupt
        assert all(len(e) + len(v) == 20 for e, v in merged)  # every item has one outcome
    assert results[0] == results[1]  # the pool changes nothing but the speed


def test_a_preprocess_function_runs_in_processes_and_its_errors_fail_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pidprep.py").write_text(
        "import os\n"
        "def tag(item):\n"
        "    if item['v'] == 13:\n"
        "        raise ValueError('unlucky')\n"
        "    return {'x': [float(item['v']), float(os.getpid())]}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    binding = [InputBinding("x", "x", "FP32", (2,))]
    pre = Preprocessor(binding, Preprocess(function="pidprep:tag"), [], batch_size=64, workers=2)
    try:
        assert pre.pool.executor_kind == "processes"
        rows: list[dict[str, object] | None] = [{"v": i} for i in range(50)]
        prepared = pre.prepare(
            ItemBatch(np.arange(50), pa.array([str(i) for i in range(50)]), rows=rows)
        )
    finally:
        pre.close()
    assert prepared.errors == {13: ("PREPROCESS_FAILED", "ValueError: unlucky")}
    (request,) = prepared.requests
    tensors = request.tensors["x"]
    assert request.indices.tolist() == [i for i in range(50) if i != 13]
    assert tensors[:, 0].tolist() == [float(i) for i in range(50) if i != 13]
    assert os.getpid() not in set(tensors[:, 1].astype(int).tolist())


def test_jpeg_is_decoded_at_reduced_scale_with_the_same_picture(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    small = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    picture = Image.fromarray(small).resize((512, 512), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    spec = ImagePreprocess(resize=[64, 64])
    drafted = decode_image(data, spec, "a.jpg")
    with Image.open(io.BytesIO(data)) as image:
        full = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32) / 255
    assert drafted.shape == full.shape == (64, 64, 3)
    assert not np.array_equal(drafted, full)  # decoded another way (at 1/8 scale) ...
    assert float(np.abs(drafted - full).mean()) < 0.02  # ... into the same picture
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (64, 64))
        assert image.size == (64, 64)  # what decode_image now decodes: 1/8 of the pixels
