"""DICOM inputs: what planning costs (headers only) and how fast volumes are made.

In one run, for the same CT series (written by pydicom: `--series` series of `--slices`
512x512 int16 slices, the size of a clinical CT slice):
  1. the header index the plan step builds (`stop_before_pixels`, 8 files at a time) against
     reading every file whole (what a listing that read pixels would cost): files/s of each
     and the ratio;
  2. series items made into float32 volumes (read, rescale to HU, window, resize to 256x256:
     `worker/dicom_pixels.read_item`) with 1 preprocessing thread and with the cores this
     process may use: slices/s, and the scaling (all cores / one thread).

Run: `make bench-dicom` (part of `make bench`), or
`.venv/bin/python benchmarks/dicom_inputs.py --series 6 --slices 48`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import fsspec
import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.dicom_files import write_ct_series

from batchpredict.api.v1alpha1.data import InputSpec
from batchpredict.io.readers import SOURCE_FIELD, open_dataset
from batchpredict.worker.dicom_pixels import read_item
from batchpredict.worker.itempool import ItemPool, pod_cpus


def index_rate(root: Path) -> tuple[float, int]:
    spec = InputSpec.model_validate({"uri": str(root), "format": "dicom"})
    started = time.perf_counter()
    dataset = open_dataset(spec)
    items = len(dataset.dicom_index())
    files = len(dataset.files)
    return files / (time.perf_counter() - started), items


def whole_file_rate(root: Path) -> float:
    files = sorted(p for p in root.rglob("*.dcm"))
    started = time.perf_counter()
    for path in files:
        pydicom.dcmread(path).pixel_array  # noqa: B018 (the read is the point)
    return len(files) / (time.perf_counter() - started)


def volume_rate(root: Path, workers: int) -> float:
    spec = InputSpec.model_validate(
        {
            "uri": str(root),
            "format": "dicom",
            "dicom": {"pixels": {"window": {"center": 40, "width": 400}, "resize": [256, 256]}},
        }
    )
    dataset = open_dataset(spec)
    sources = [r[SOURCE_FIELD] for b in dataset.iter_items() for r in b.rows or [] if r]
    pool = ItemPool(workers)
    try:
        started = time.perf_counter()
        slices = sum(len(v) for v in pool.submit(read_item, sources))
        return slices / (time.perf_counter() - started)
    finally:
        pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--series", type=int, default=6)
    parser.add_argument("--slices", type=int, default=48)
    args = parser.parse_args()
    cores = pod_cpus()
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as tmp:
        root = Path(tmp)
        for n in range(args.series):
            write_ct_series(root / f"s{n}", slices=args.slices, rows=512, columns=512)
        fsspec.filesystem("file").invalidate_cache()
        files = args.series * args.slices
        size = sum(p.stat().st_size for p in root.rglob("*.dcm")) / 2**20
        print(
            f"{args.series} series x {args.slices} slices of 512x512: {files} files, {size:.0f} MiB"
        )
        headers, items = index_rate(root)
        whole = whole_file_rate(root)
        print(f"plan: header index   {headers:8.0f} files/s ({items} series items)")
        print(f"      whole files    {whole:8.0f} files/s")
        print(f"      ratio          {headers / whole:8.1f}x (headers only / whole files)")
        one = volume_rate(root, 1)
        many = volume_rate(root, cores)
        print(f"volumes (HU, window, 256x256): 1 thread   {one:8.0f} slices/s")
        print(f"                               {cores} threads  {many:8.0f} slices/s")
        print(f"                               scaling    {many / one:8.2f}x on {cores} cores")
        print(f"(load average while measured: {os.getloadavg()[0]:.1f}; np {np.__version__})")


if __name__ == "__main__":
    main()
