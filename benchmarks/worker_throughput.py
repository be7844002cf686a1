"""Worker throughput against ideal clients, and worker memory against shard size.

Starts tritonserver, then for each model, in one run:
  1. two ideal clients replay pre-built requests (no reading, no preprocessing, no writing)
     at the batch size and concurrency the worker picks automatically: tritonclient's
     grpc.aio client with pre-built InferInputs, and a bare gRPC ModelInfer call with
     pre-serialized ModelInferRequests (the cheapest client we know; the worker sends so);
  2. the worker (plan + one shard, as `batchpredict-worker` processes) reads N items from
     Parquet, preprocesses, infers, writes Parquet chunks;
  3. the ideal clients again (runs are averaged: this machine is noisy);
then peak RSS of a shard worker for 100,000 and 1,000,000 items; then the comparison again
with tritonserver and the clients on separate cores (`--no-separate-cores` skips it).

The ratio is taken against the faster ideal client. CPU seconds of each side and of
tritonserver are printed too: where client and server share a few cores, throughput is
bounded by the CPU both spend, and these figures say where it goes (benchmarks/README.md).

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

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tritonclient.grpc.aio as grpcclient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness.triton_server import TritonHandle, start_triton, write_model_repository

from batchpredict.triton.client import GRPC_CHANNEL_ARGS, encode_request, model_infer_method

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


def run_role(role: str, env: dict[str, str]) -> tuple[float, float]:
    """Run one worker role; returns (wall seconds, CPU seconds)."""
    started = time.monotonic()
    process = subprocess.Popen([WORKER, role], env=env, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"worker {role} exited {process.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    return time.monotonic() - started, cpu


def _process_tree(root: int) -> list[int]:
    """`root` and every process below it (tritonserver's Python-backend stubs)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def server_cpu(triton: TritonHandle) -> float:
    """CPU seconds used so far by tritonserver and its Python-backend stub processes."""
    total = 0.0
    for pid in _process_tree(triton.process.pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _pin(pid: int | str, cpus: set[int]) -> None:
    for thread in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(thread.name), cpus)


def separate_cores(triton: TritonHandle) -> str:
    """Give tritonserver the first half of the cores and the clients (this process, the
    workers it starts) the rest, as a worker pod beside its own Triton would have them."""
    cpus = sorted(os.sched_getaffinity(0))
    half = max(1, len(cpus) // 2)
    server, clients = set(cpus[:half]), set(cpus[half:])
    for pid in _process_tree(triton.process.pid):
        _pin(pid, server)
    _pin("self", clients)
    return f"tritonserver on cpus {sorted(server)}, the clients on cpus {sorted(clients)}"


def run_worker(triton: TritonHandle, model: str, items: int, tmp: Path) -> dict[str, Any]:
    data = tmp / f"data-{model}-{items}.parquet"
    if not data.exists():
        write_dataset(data, items, model)
    out = tmp / f"out-{model}-{items}-{time.monotonic_ns()}"
    env = worker_env(triton, model, data, out, tmp)
    run_role("plan", env)
    server = server_cpu(triton)
    wall, cpu = run_role("shard", env)
    server = server_cpu(triton) - server
    manifest = json.loads((out / "rounds/000/shard-00000/manifest.json").read_text())
    if manifest["succeeded"] != items:
        raise SystemExit(f"worker predicted {manifest['succeeded']} of {items} items")
    shutil.rmtree(out, ignore_errors=True)
    return {**manifest, "wall": wall, "cpu": cpu, "server_cpu": server}


def _requests(model: str, items: int, batch: int) -> list[tuple[str, np.ndarray]]:
    name = "features" if model == "mlp" else "x"
    requests = []
    for start in range(0, items, batch):
        stop = min(items, start + batch)
        if model == "mlp":
            x = features(start, stop)
        else:
            x = np.arange(start, stop, dtype=np.float32).reshape(-1, 1)
        requests.append((name, x))
    return requests


def _output(model: str) -> str:
    return "probs" if model == "mlp" else "y"


async def tritonclient_ideal(url: str, model: str, requests: list[Any], concurrency: int) -> None:
    """Replays pre-built tritonclient InferInputs through tritonclient's grpc.aio client."""
    client = grpcclient.InferenceServerClient(url, channel_args=GRPC_CHANNEL_ARGS)
    output = _output(model)
    outputs = [grpcclient.InferRequestedOutput(output)]
    queue = iter(requests)

    async def lane() -> None:
        for request in queue:
            result = await client.infer(model, request, outputs=outputs)
            result.as_numpy(output)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    await client.close()


async def stub_ideal(url: str, model: str, requests: list[Any], concurrency: int) -> None:
    """Replays pre-serialized ModelInferRequests through a bare gRPC call."""
    async with grpc.aio.insecure_channel(url, options=GRPC_CHANNEL_ARGS) as channel:
        model_infer = model_infer_method(channel)
        queue = iter(requests)

        async def lane() -> None:
            for request in queue:
                response = await model_infer(request)
                np.frombuffer(response.raw_output_contents[0], dtype=np.float32)

        await asyncio.gather(*(lane() for _ in range(concurrency)))


IDEALS = {"tritonclient": tritonclient_ideal, "grpc stub": stub_ideal}


def ideal_client(  # noqa: PLR0917 (the settings the worker ran with)
    triton: TritonHandle, kind: str, model: str, items: int, batch: int, concurrency: int
) -> dict[str, float]:
    """Items/s and CPU seconds (client, server) of one ideal client over `items` items."""
    built: list[Any] = []
    for name, x in _requests(model, items, batch):
        if kind == "tritonclient":
            tensor = grpcclient.InferInput(name, list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            built.append([tensor])
        else:
            built.append(encode_request(model, None, {name: (x, "FP32")}, [_output(model)]))
    server = server_cpu(triton)
    cpu = time.process_time()
    started = time.monotonic()
    asyncio.run(IDEALS[kind](triton.grpc_url, model, built, concurrency))
    elapsed = time.monotonic() - started
    return {
        "rate": items / elapsed,
        "cpu": time.process_time() - cpu,
        "server_cpu": server_cpu(triton) - server,
    }


def _mean(runs: list[dict[str, float]], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


def compare(triton: TritonHandle, model: str, items: int, tmp: Path, cores: str | None) -> None:
    """Worker against ideal clients; `cores` says how the cores are split (None: shared)."""
    # A warm-up run over the same items picks (and tunes) the automatic settings that the
    # ideal clients then use.
    warm = run_worker(triton, model, items, tmp)
    batch, concurrency = warm["batchSize"], warm["concurrency"]
    ideal: dict[str, list[dict[str, float]]] = {kind: [] for kind in IDEALS}
    for kind in IDEALS:
        ideal[kind].append(ideal_client(triton, kind, model, items, batch, concurrency))
    worker = run_worker(triton, model, items, tmp)
    for kind in reversed(IDEALS):
        ideal[kind].append(ideal_client(triton, kind, model, items, batch, concurrency))
    per_million = 1e6 / items
    print(f"== model {model}: {items:,} items, Parquet in, Parquet out, 1 shard")
    print(f"cores: {cores or f'{os.cpu_count()}, shared by tritonserver and the client'}")
    print(f"automatic settings: batch size {batch}, concurrency {concurrency}")
    for kind, runs in ideal.items():
        rates = ", ".join(f"{r['rate']:,.0f}" for r in runs)
        print(
            f"ideal client ({kind}): {_mean(runs, 'rate'):,.0f} items/s "
            f"(runs: {rates}); CPU s per 1M items: "
            f"client {_mean(runs, 'cpu') * per_million:.2f}, "
            f"tritonserver {_mean(runs, 'server_cpu') * per_million:.2f}"
        )
    worker_rate = items / worker["seconds"]
    cpu = {stage: seconds * per_million for stage, seconds in worker["cpuSeconds"].items()}
    other_threads = cpu["process"] - cpu["eventLoop"] - cpu["reading"] - cpu["writing"]
    print(
        f"worker: {worker_rate:,.0f} items/s in the shard pipeline "
        f"({items / worker['wall']:,.0f} items/s counting process start and model checks); "
        f"CPU s per 1M items: worker {cpu['process']:.2f} "
        f"(event loop {cpu['eventLoop']:.2f}, reading {cpu['reading']:.2f}, "
        f"writing {cpu['writing']:.2f}, other threads (gRPC's) {other_threads:.2f}; "
        f"{worker['cpu'] * per_million:.2f} with process start), "
        f"tritonserver {worker['server_cpu'] * per_million:.2f}"
    )
    best = max(IDEALS, key=lambda kind: _mean(ideal[kind], "rate"))
    ratio = worker_rate / _mean(ideal[best], "rate")
    if cores is not None:
        print(f"worker/ideal throughput ratio, tritonserver on cores of its own: {ratio:.2f}")
        return
    # Where client and server share the cores, items/s ~ cores / CPU seconds per item of both:
    # the ratio the CPU figures alone predict (benchmarks/README.md).
    ideal_cpu = _mean(ideal[best], "cpu") + _mean(ideal[best], "server_cpu")
    worker_cpu = worker["cpuSeconds"]["process"] + worker["server_cpu"]
    print(
        f"ratio against the {best} ideal client; CPU-bound estimate "
        f"(ideal client + tritonserver CPU) / (worker + tritonserver CPU): "
        f"{ideal_cpu / worker_cpu:.2f}"
    )
    print(f"worker/ideal throughput ratio: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--rss-items", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument(
        "--no-separate-cores",
        action="store_true",
        help="skip the second comparison, with tritonserver and the clients on separate cores",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    triton = start_triton(write_model_repository(tmp / "models", MODELS))
    try:
        for model in args.models:
            compare(triton, model, args.items, tmp, cores=None)
        for items in args.rss_items:
            result = run_worker(triton, "double", items, tmp)
            # The worker's own VmHWM: wait4's ru_maxrss would count the pages of this (large)
            # process the child had between fork and exec.
            print(
                f"peak RSS of a shard worker, {items:>9,} items: {result['peakMemoryMiB']:.0f} MiB"
            )
        if not args.no_separate_cores and len(os.sched_getaffinity(0)) > 1:
            cores = separate_cores(triton)
            for model in args.models:
                compare(triton, model, args.items, tmp, cores=cores)
    finally:
        triton.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
