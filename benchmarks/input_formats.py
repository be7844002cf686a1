"""Every input at full speed: items/s by input format, images/s by cores, plan time by size.

In one run, for the same items:
  1. the worker (plan + one shard, as `batchpredict-worker` processes, against tritonserver's
     `double` model) reading Parquet, JSONL, CSV and gzip-compressed JSONL: items/s of the
     shard pipeline and the ratio of each to Parquet (formats alternate over `--rounds`
     rounds; the mean is printed); then the gzip file's decompression alone by Arrow's zlib,
     Python's gzip and ISA-L;
  2. the image path of a worker (read the file, decode the JPEG, resize to 224x224, normalize,
     stack into requests: what the reading side of a shard does before Triton) with 1
     preprocessing worker and with all the cores this process may use, against one thread
     that only decodes and resizes (the issue's baseline): images/s and the scaling
     efficiency, images/s(all cores) / (cores x one-thread decode);
  3. the plan step (`batchpredict-worker plan`, the process a plan pod runs) on 1x, 10x and
     100x the data, for each format: the data is the same file hard-linked 1, 10 and 100
     times into a directory, so 100x costs no disk. JSONL and CSV twice: planned by rows
     (counted from line ends) and by byte ranges (from the listing alone).

Run: `make bench-inputs` (part of `make bench`), or
`.venv/bin/python benchmarks/input_formats.py --items 200000 --images 300`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness.triton_server import TritonHandle, start_triton, write_model_repository

from batchpredict.api.v1alpha1.data import ImagePreprocess, InputSpec, Preprocess
from batchpredict.io.readers import open_dataset
from batchpredict.triton.tensors import ITEM_FIELD, InputBinding
from batchpredict.worker import preprocess as preprocess_module
from batchpredict.worker.preprocess import Preprocessor

WORKER = str(Path(sys.executable).parent / "batchpredict-worker")
# Each item: an id, the model's input `x` and 15 more floats (16 numbers, as in issue 17).
EXTRA = 15
FORMATS = ("parquet", "jsonl", "csv", "jsonl.gz")
IMAGE_SIZE = 512
TARGET = 224


def item_table(items: int) -> pa.Table:
    rows = np.arange(items, dtype=np.float64)
    columns: dict[str, Any] = {"key": pa.array([f"item-{i}" for i in range(items)])}
    columns["x"] = pa.array(rows.astype(np.float32))
    for j in range(1, EXTRA + 1):
        columns[f"f{j}"] = pa.array(np.round(np.sin(rows * j), 6))
    return pa.table(columns)


def write_formats(table: pa.Table, tmp: Path) -> dict[str, Path]:
    """The same items in every format (the JSONL written as `json.dumps` writes it)."""
    tmp.mkdir(parents=True, exist_ok=True)
    paths = {fmt: tmp / f"items.{fmt}" for fmt in FORMATS}
    pq.write_table(table, paths["parquet"], row_group_size=100_000)
    pa_csv.write_csv(table, paths["csv"], pa_csv.WriteOptions(quoting_style="none"))
    names = table.column_names
    with paths["jsonl"].open("w") as out:
        for batch in table.to_batches(50_000):
            columns = [batch.column(n).to_pylist() for n in names]
            out.writelines(
                json.dumps(dict(zip(names, r, strict=True))) + "\n"
                for r in zip(*columns, strict=True)
            )
    with paths["jsonl"].open("rb") as plain, gzip.open(paths["jsonl.gz"], "wb", 6) as packed:
        shutil.copyfileobj(plain, packed)
    return paths


def format_of(path: Path) -> str:
    name = path.name if path.is_file() else next(path.iterdir()).name
    return next(f for f in ("parquet", "jsonl", "csv") if f".{f}" in name)


def worker_env(
    triton: TritonHandle, data: Path, out: Path, tmp: Path, byte_ranges: bool | None = None
) -> dict[str, str]:
    input_: dict[str, Any] = {"uri": str(data), "format": format_of(data), "idField": "key"}
    if byte_ranges is not None:
        input_["byteRanges"] = byte_ranges
    spec = {
        "model": {"name": "double", "inputs": [{"name": "x", "field": "x"}]},
        "triton": {"url": triton.grpc_url},
        "input": input_,
        "output": {"uri": str(out), "format": "parquet"},
        "shards": 1,
    }
    return {
        **os.environ,
        "BATCHPREDICT_SPEC": json.dumps(spec),
        "BATCHPREDICT_RUN_UID": out.name,
        "BATCHPREDICT_REPORT": "file",
        "BATCHPREDICT_TERMINATION_LOG": str(tmp / f"{out.name}.term"),
        "JOB_COMPLETION_INDEX": "0",
    }


def run_role(role: str, env: dict[str, str]) -> float:
    """Run one worker role; its wall seconds."""
    started = time.monotonic()
    done = subprocess.run([WORKER, role], env=env, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker {role} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return time.monotonic() - started


def shard_rate(triton: TritonHandle, data: Path, items: int, tmp: Path) -> dict[str, float]:
    out = tmp / f"out-{time.monotonic_ns()}"
    env = worker_env(triton, data, out, tmp)
    run_role("plan", env)
    run_role("shard", env)
    manifest = json.loads((out / "rounds/000/shard-00000/manifest.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    if manifest["succeeded"] != items:  # a worker that cannot read this format
        return {"rate": float("nan"), "succeeded": manifest["succeeded"]}
    cpu = manifest["cpuSeconds"]
    return {"rate": items / manifest["seconds"], "reading": cpu["reading"], "cpu": cpu["process"]}


def bench_formats(triton: TritonHandle, items: int, rounds: int, tmp: Path) -> None:
    paths = write_formats(item_table(items), tmp)
    sizes = ", ".join(f"{f} {paths[f].stat().st_size / 1e6:.0f} MB" for f in FORMATS)
    print(f"== input formats: {items:,} items (id, x and {EXTRA} more floats), model double")
    print(f"files: {sizes}")
    runs: dict[str, list[dict[str, float]]] = {f: [] for f in FORMATS}
    for number in range(rounds):
        order = FORMATS if number % 2 == 0 else tuple(reversed(FORMATS))
        for fmt in order:
            runs[fmt].append(shard_rate(triton, paths[fmt], items, tmp))
    parquet = float(np.mean([r["rate"] for r in runs["parquet"]]))
    for fmt in FORMATS:
        if any("succeeded" in r for r in runs[fmt]):  # nan rates: say so instead
            got = runs[fmt][0]["succeeded"]
            print(f"{fmt:>9}: not read by this worker ({got:,} of {items:,} items predicted)")
            continue
        rate = float(np.mean([r["rate"] for r in runs[fmt]]))
        reading = float(np.mean([r["reading"] for r in runs[fmt]])) * 1e6 / items
        cpu = float(np.mean([r["cpu"] for r in runs[fmt]])) * 1e6 / items
        each = ", ".join(f"{r['rate']:,.0f}" for r in runs[fmt])
        print(
            f"{fmt:>9}: {rate:>9,.0f} items/s (runs: {each}); CPU s per 1M items: worker "
            f"{cpu:.2f}, its reading thread {reading:.2f}; ratio to Parquet {rate / parquet:.2f}"
        )


def bench_gzip(tmp: Path) -> None:
    """Decompression alone, per library, on the formats' gzip JSONL: why the worker reads
    gzip through ISA-L (io/textblocks.py) and the other codecs through Arrow."""
    from isal import igzip  # noqa: PLC0415 (this part only)

    path = tmp / "items.jsonl.gz"

    def drain(stream: Any) -> int:
        size = 0
        while data := stream.read(4 << 20):
            size += len(data)
        return size

    def arrow() -> int:
        with path.open("rb") as handle:
            return drain(pa.CompressedInputStream(pa.PythonFile(handle, mode="r"), "gzip"))

    def isal() -> int:
        with path.open("rb") as handle, igzip.IGzipFile(fileobj=handle, mode="rb") as stream:  # type: ignore[no-untyped-call]
            return drain(stream)

    def stdlib() -> int:
        with gzip.open(path, "rb") as stream:
            return drain(stream)

    print(f"== gzip: decompressing {path.stat().st_size / 1e6:.0f} MB alone, best of 3")
    for label, read in (("Arrow (zlib)", arrow), ("Python gzip", stdlib), ("ISA-L", isal)):
        best, size = float("inf"), 0
        for _ in range(3):
            started = time.perf_counter()
            size = read()
            best = min(best, time.perf_counter() - started)
        print(f"{label:>13}: {size / best / 1e6:5.0f} MB/s of output")


def write_images(directory: Path, count: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    for i in range(count):
        picture = Image.fromarray(np.roll(base, i, axis=(0, 1)))
        picture = picture.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
        picture.save(directory / f"img-{i:05d}.jpg", quality=90)


def one_thread_decode(directory: Path, draft: bool) -> float:
    """Images/s of one thread that reads, decodes and resizes (no pool, no batching)."""
    files = sorted(directory.iterdir())
    started = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            if draft:
                image.draft("RGB", (TARGET, TARGET))
            np.asarray(image.convert("RGB").resize((TARGET, TARGET)), dtype=np.float32)
    return len(files) / (time.perf_counter() - started)


def image_path(directory: Path, workers: int) -> float:
    """Images/s of the worker's reading side: list, read, decode, resize, normalize, stack."""
    spec = InputSpec(uri=str(directory), format="files")
    binding = [InputBinding("image", ITEM_FIELD, "FP32", (TARGET, TARGET, 3))]
    preprocess = Preprocess(image=ImagePreprocess(resize=[TARGET, TARGET]))
    try:
        pre = Preprocessor(binding, preprocess, [], batch_size=32, workers=workers)
    except TypeError:  # a worker from before the pool: one thread
        pre = Preprocessor(binding, preprocess, [], batch_size=32)
    prepare_all: Callable[[Any], Any] = getattr(pre, "prepare_all", lambda b: map(pre.prepare, b))
    started = time.perf_counter()
    dataset = open_dataset(spec)
    done = 0
    for prepared in prepare_all(dataset.iter_items(batch_rows=96)):
        done += sum(len(r.indices) for r in prepared.requests)
    elapsed = time.perf_counter() - started
    getattr(pre, "close", lambda: None)()
    return done / elapsed


def bench_images(count: int, tmp: Path) -> None:
    directory = tmp / "images"
    write_images(directory, count)
    cores = len(os.sched_getaffinity(0))
    pod = getattr(preprocess_module, "pod_cpus", lambda: 1)()
    print(
        f"== images: {count} JPEGs of {IMAGE_SIZE}x{IMAGE_SIZE} -> {TARGET}x{TARGET}, "
        f"{cores} cores (the pool's default size here: {pod})"
    )
    image_path(directory, 1)  # warm the page cache and the imports
    full = one_thread_decode(directory, draft=False)
    drafted = one_thread_decode(directory, draft=True)
    one = image_path(directory, 1)
    every = image_path(directory, cores)
    print(f"one thread, decode + resize at full scale: {full:,.0f} images/s")
    print(f"one thread, decode at reduced scale (draft) + resize: {drafted:,.0f} images/s")
    print(f"image path, 1 preprocessing worker: {one:,.0f} images/s")
    print(f"image path, {cores} preprocessing workers: {every:,.0f} images/s")
    print(
        f"scaling efficiency, images/s({cores} workers) / ({cores} x one-thread decode): "
        f"{every / (cores * drafted):.2f} against the reduced-scale decode, "
        f"{every / (cores * full):.2f} against the full-scale decode; "
        f"{cores} workers / 1 worker: {every / one:.2f}"
    )


def linked(source: Path, copies: int, directory: Path) -> Path:
    """`copies` hard links of `source` in `directory` (a dataset of copies x the data)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(copies):
        os.link(source, directory / f"part-{i:04d}-{source.name}")
    return directory


def bench_plan(triton: TritonHandle, items: int, images: int, tmp: Path) -> None:
    paths = write_formats(item_table(items), tmp / "plan")
    print("== plan step: seconds of `batchpredict-worker plan` at 1x, 10x, 100x the data")
    print(f"(1x: {items:,} items; {images} image files)")
    sizes = {fmt: paths[fmt].stat().st_size for fmt in FORMATS}
    print(
        "(text formats: 'rows' counts the rows from line ends, 'byte ranges' plans from the "
        "listing alone; by default byte ranges from 256 MiB of files: "
        + ", ".join(f"{f} 100x = {sizes[f] * 100 / 2**20:,.0f} MiB" for f in FORMATS[1:])
        + ")"
    )
    for fmt in FORMATS:
        modes: tuple[bool | None, ...] = (None,) if fmt == "parquet" else (False, True)
        for byte_ranges in modes:
            times = []
            for copies in (1, 10, 100):
                data = tmp / "plan" / f"{fmt}-{copies}"
                if not data.exists():
                    linked(paths[fmt], copies, data)
                times.append(plan_seconds(triton, data, tmp, byte_ranges=byte_ranges))
            label = {None: "", False: " rows", True: " byte ranges"}[byte_ranges]
            print(
                f"{fmt + label:>20}: "
                + ", ".join(f"{t:.2f} s" for t in times)
                + f" (100x/1x {times[2] / times[0]:.1f})"
            )
    source = tmp / "images"
    times = []
    for copies in (1, 10, 100):
        directory = tmp / "plan" / f"files-{copies}"
        directory.mkdir(parents=True)
        for i in range(copies):
            for path in list(source.iterdir())[:images]:
                os.link(path, directory / f"c{i:03d}-{path.name}")
        times.append(plan_seconds(triton, directory, tmp, files=True))
    print(
        f"{'files':>20}: "
        + ", ".join(f"{t:.2f} s" for t in times)
        + f" (100x/1x {times[2] / times[0]:.1f})"
    )


def plan_seconds(
    triton: TritonHandle,
    data: Path,
    tmp: Path,
    *,
    files: bool = False,
    byte_ranges: bool | None = None,
) -> float:
    out = tmp / f"out-{time.monotonic_ns()}"
    if files:
        env = image_env(triton, data, out, tmp)
    else:
        env = worker_env(triton, data, out, tmp, byte_ranges)
    try:
        seconds = run_role("plan", env)
    except SystemExit as failed:  # a worker that cannot read this format
        print(f"  (plan failed: {str(failed)[-160:]})")
        seconds = float("nan")
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def image_env(triton: TritonHandle, data: Path, out: Path, tmp: Path) -> dict[str, str]:
    env = worker_env(triton, tmp / "plan" / "items.parquet", out, tmp)
    spec = json.loads(env["BATCHPREDICT_SPEC"])
    spec["model"] = {"name": "image_mean"}
    spec["input"] = {
        "uri": str(data),
        "format": "files",
        "preprocess": {"image": {"resize": [8, 8]}},
    }
    return {**env, "BATCHPREDICT_SPEC": json.dumps(spec)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--plan-items", type=int, default=20_000)
    parser.add_argument(
        "--parts",
        nargs="*",
        default=["formats", "images", "plan"],
        choices=["formats", "images", "plan"],
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-inputs-"))
    triton = start_triton(write_model_repository(tmp / "models", ["double", "image_mean"]))
    try:
        if "formats" in args.parts:
            bench_formats(triton, args.items, args.rounds, tmp)
            bench_gzip(tmp)
        if "images" in args.parts or "plan" in args.parts:
            bench_images(args.images, tmp)  # the plan's `files` dataset too
        if "plan" in args.parts:
            bench_plan(triton, args.plan_items, args.images, tmp)
    finally:
        triton.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
