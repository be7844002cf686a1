"""Worker throughput against an ideal client, and worker memory against shard size.

Starts tritonserver, then for each model, in one run:
  1. an ideal client replays pre-built requests (no reading, no preprocessing, no writing)
     at the batch size and concurrency the worker picks automatically;
  2. the worker (plan + one shard, as `batchpredict-worker` processes) reads N items from
     Parquet, preprocesses, infers, writes Parquet chunks;
  3. the ideal client again (the two ideal runs are averaged: this machine is noisy);
then peak RSS of a shard worker for 100,000 and 1,000,000 items.

Models (tests/harness/models): `double` (y = 2x, one float per item: the cheapest possible
request, so the ratio measures the worker's own per-item cost against bare gRPC) and `mlp`
(64 features -> 10 class probabilities, argmax and top-3 kept: a small real model).

Run: `make bench` (or `.venv/bin/python benchmarks/worker_throughput.py --items 200000`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tritonclient.grpc.aio as grpcclient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness.triton_server import TritonHandle, start_triton, write_model_repository

WORKER = str(Path(sys.executable).parent / "batchpredict-worker")
MODELS = ("double", "mlp")
FEATURES = 64


def features(start: int, stop: int) -> np.ndarray:
    rows = np.arange(start, stop, dtype=np.float32)[:, None]
    return np.sin(rows * np.arange(1, FEATURES + 1, dtype=np.float32)).astype(np.float32)


def write_dataset(path: Path, items: int, model: str) -> Path:
    """`items` rows of (key, x or features), written in slices so 1M rows stay small."""
    with pq.ParquetWriter(path, _schema(model)) as writer:
        for start in range(0, items, 100_000):
            stop = min(items, start + 100_000)
            columns: dict[str, pa.Array] = {
                "key": pa.array([f"item-{i}" for i in range(start, stop)])
            }
            if model == "mlp":
                flat = pa.array(features(start, stop).reshape(-1))
                columns["features"] = pa.FixedSizeListArray.from_arrays(flat, FEATURES)
            else:
                columns["x"] = pa.array(np.arange(start, stop, dtype=np.float32))
            writer.write_table(pa.table(columns), row_group_size=100_000)
    return path


def _schema(model: str) -> pa.Schema:
    if model == "mlp":
        return pa.schema([("key", pa.string()), ("features", pa.list_(pa.float32(), FEATURES))])
    return pa.schema([("key", pa.string()), ("x", pa.float32())])


def worker_env(
    triton: TritonHandle, model: str, data: Path, out: Path, tmp: Path
) -> dict[str, str]:
    outputs = (
        [
            {"name": "probs", "field": "label", "postprocess": "argmax"},
            {"name": "probs", "field": "top3", "postprocess": "topk", "k": 3},
        ]
        if model == "mlp"
        else None
    )
    spec = {
        "model": {"name": model, **({"outputs": outputs} if outputs else {})},
        "triton": {"url": triton.grpc_url},
        "input": {"uri": str(data), "format": "parquet", "idField": "key"},
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


def run_role(role: str, env: dict[str, str]) -> tuple[float, int]:
    """Run one worker role; returns (wall seconds, peak RSS in KiB)."""
    started = time.monotonic()
    process = subprocess.Popen([WORKER, role], env=env, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"worker {role} exited {process.returncode}")
    return time.monotonic() - started, int(usage.ru_maxrss)


def run_worker(triton: TritonHandle, model: str, items: int, tmp: Path) -> dict[str, Any]:
    data = tmp / f"data-{model}-{items}.parquet"
    if not data.exists():
        write_dataset(data, items, model)
    out = tmp / f"out-{model}-{items}-{time.monotonic_ns()}"
    env = worker_env(triton, model, data, out, tmp)
    run_role("plan", env)
    wall, rss = run_role("shard", env)
    manifest = json.loads((out / "rounds/000/shard-00000/manifest.json").read_text())
    if manifest["succeeded"] != items:
        raise SystemExit(f"worker predicted {manifest['succeeded']} of {items} items")
    return {**manifest, "wall": wall, "rss_kib": rss}


async def ideal_client(url: str, model: str, items: int, batch: int, concurrency: int) -> float:
    """Items/s of a client that only replays pre-built requests."""
    client = grpcclient.InferenceServerClient(url)
    name, output = ("features", "probs") if model == "mlp" else ("x", "y")
    requests = []
    for start in range(0, items, batch):
        stop = min(items, start + batch)
        if model == "mlp":
            x = features(start, stop)
        else:
            x = np.arange(start, stop, dtype=np.float32).reshape(-1, 1)
        tensor = grpcclient.InferInput(name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        requests.append([tensor])
    outputs = [grpcclient.InferRequestedOutput(output)]
    queue = iter(requests)

    async def lane() -> None:
        for request in queue:
            result = await client.infer(model, request, outputs=outputs)
            result.as_numpy(output)

    started = time.monotonic()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    await client.close()
    return items / elapsed


def compare(triton: TritonHandle, model: str, items: int, tmp: Path) -> None:
    # A warm-up run over the same items picks (and tunes) the automatic settings that the
    # ideal client then uses.
    warm = run_worker(triton, model, items, tmp)
    batch, concurrency = warm["batchSize"], warm["concurrency"]
    url = triton.grpc_url
    ideal = [asyncio.run(ideal_client(url, model, items, batch, concurrency))]
    worker = run_worker(triton, model, items, tmp)
    ideal.append(asyncio.run(ideal_client(url, model, items, batch, concurrency)))
    ideal_rate = sum(ideal) / len(ideal)
    worker_rate = items / worker["seconds"]
    print(f"== model {model}: {items:,} items, Parquet in, Parquet out, 1 shard")
    print(f"automatic settings: batch size {batch}, concurrency {concurrency}")
    print(
        f"ideal client: {ideal_rate:,.0f} items/s (runs: {', '.join(f'{r:,.0f}' for r in ideal)})"
    )
    print(
        f"worker: {worker_rate:,.0f} items/s in the shard pipeline "
        f"({items / worker['wall']:,.0f} items/s counting process start and model checks)"
    )
    print(f"worker/ideal throughput ratio: {worker_rate / ideal_rate:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=400_000)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--rss-items", type=int, nargs="*", default=[100_000, 1_000_000])
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    triton = start_triton(write_model_repository(tmp / "models", MODELS))
    try:
        for model in args.models:
            compare(triton, model, args.items, tmp)
        for items in args.rss_items:
            result = run_worker(triton, "double", items, tmp)
            print(
                f"peak RSS of a shard worker, {items:>9,} items: {result['rss_kib'] / 1024:.0f} MiB"
            )
    finally:
        triton.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
