"""The measuring half of benchmarks/gpu.py (imported once a GPU was found, or for --smoke):
the model repository, the datasets, the worker and the ideal client, NVML and Triton's
statistics."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness.triton_server import TritonHandle, start_triton

from batchpredict.triton.client import encode_request
from worker_throughput import run_role, separate_cores, stub_ideal

MODEL, INPUT, OUTPUT = "resnet50", "image", "logits"
SIDE = 224
SHAPE = (3, SIDE, SIDE)
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
MAX_BATCH = 64

CONFIG = """name: "resnet50"
backend: "python"
max_batch_size: {max_batch}
input [ {{ name: "image" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] }} ]
output [ {{ name: "logits" data_type: TYPE_FP32 dims: [ 1000 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 200 }}
instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
"""
# The GPU model: TorchScript on CUDA in FP16 (the instance kind is CPU: the Python backend
# hands the device to torch, which picks the GPU itself).
GPU_MODEL = """import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from pathlib import Path


class TritonPythonModel:
    def initialize(self, args):
        self.device = torch.device("cuda")
        path = str(Path(__file__).parent / "model.pt")
        self.model = torch.jit.load(path, map_location=self.device).half().eval()

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(r, "image").as_numpy() for r in requests]
        x = torch.from_numpy(np.concatenate(batches)).to(self.device).half()
        with torch.inference_mode():
            logits = self.model(x).float().cpu().numpy()
        responses, start = [], 0
        for batch in batches:
            part = logits[start : start + len(batch)]
            start += len(batch)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("logits", part)]))
        return responses
"""
# The smoke stand-in: the same tensors in and out, a fixed projection of channel means.
SMOKE_MODEL = """import numpy as np
import triton_python_backend_utils as pb_utils

W = np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            logits = x.reshape(len(x), 3, -1).mean(axis=2) @ W
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("logits", logits)]))
        return responses
"""


def write_repository(directory: Path, smoke: bool) -> Path:
    model = directory / MODEL
    (model / "1").mkdir(parents=True, exist_ok=True)
    instances = 1 if smoke else 2
    (model / "config.pbtxt").write_text(CONFIG.format(max_batch=MAX_BATCH, instances=instances))
    (model / "1" / "model.py").write_text(SMOKE_MODEL if smoke else GPU_MODEL)
    if not smoke:
        import torch  # noqa: PLC0415 (the gpu-bench extra: only this path needs it)
        import torchvision  # noqa: PLC0415

        net = torchvision.models.resnet50(weights=None).eval()  # random weights, no download
        traced = torch.jit.trace(net, torch.randn(1, *SHAPE))
        traced.save(str(model / "1" / "model.pt"))
    return directory


def write_images(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = (rng.random((SIDE, SIDE, 3)) * 255).astype(np.uint8)
    for i in range(count):
        Image.fromarray(np.roll(base, i, axis=(0, 1))).save(directory / f"img-{i:05d}.jpg")
    return directory


def tensors(start: int, stop: int) -> np.ndarray:
    rng = np.random.default_rng(start)
    return rng.standard_normal((stop - start, *SHAPE), dtype=np.float32)


def write_tensors(path: Path, count: int) -> Path:
    size = int(np.prod(SHAPE))
    schema = pa.schema([("key", pa.string()), (INPUT, pa.list_(pa.float32(), size))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, count, 64):
            stop = min(count, start + 64)
            flat = pa.array(tensors(start, stop).reshape(-1))
            table = pa.table(
                {
                    "key": pa.array([f"item-{i}" for i in range(start, stop)]),
                    INPUT: pa.FixedSizeListArray.from_arrays(flat, size),
                }
            )
            writer.write_table(table, row_group_size=64)
    return path


def worker_env(triton: TritonHandle, kind: str, data: Path, out: Path) -> dict[str, str]:
    source: dict[str, Any] = {"uri": str(data), "format": "parquet", "idField": "key"}
    if kind == "images":
        image = {"resize": [SIDE, SIDE], "mean": MEAN, "std": STD, "channelsFirst": True}
        source = {"uri": str(data), "format": "files", "preprocess": {"image": image}}
    spec = {
        "model": {
            "name": MODEL,
            "outputs": [{"name": OUTPUT, "field": "top5", "postprocess": "topk", "k": 5}],
        },
        "triton": {"url": triton.grpc_url},
        "input": source,
        "output": {"uri": str(out), "format": "parquet"},
        "shards": 1,
    }
    return {
        **os.environ,
        "BATCHPREDICT_SPEC": json.dumps(spec),
        "BATCHPREDICT_RUN_UID": out.name,
        "BATCHPREDICT_REPORT": "file",
        "BATCHPREDICT_TERMINATION_LOG": str(out.parent / f"{out.name}.term"),
        "JOB_COMPLETION_INDEX": "0",
    }


def _smi_utilisation() -> float:
    query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
    done = subprocess.run(query, capture_output=True, text=True, check=True, timeout=10)
    return float(done.stdout.split()[0])


class GpuSampler:
    """GPU utilisation every 100 ms while a run goes on: NVML, else nvidia-smi."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._query: Any = None
        self.error = ""

    def _setup(self) -> None:
        try:
            import pynvml  # noqa: PLC0415 (nvidia-ml-py, the gpu-bench extra)

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._query = lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 (no NVML or pynvml.NVMLError: ask nvidia-smi)
            self._query = _smi_utilisation

    def _run(self) -> None:
        self._setup()
        while not self._stop.wait(0.1):
            try:
                self.samples.append(self._query())
            except (OSError, ValueError, IndexError, subprocess.CalledProcessError) as error:
                self.error = f"sampling stopped: {error}"
                return

    def __enter__(self) -> GpuSampler:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()

    def describe(self) -> str:
        if not self.samples:
            return f"GPU utilisation: not sampled {self.error}".rstrip()
        return (
            f"GPU utilisation: mean {statistics.fmean(self.samples):.0f}%, "
            f"max {max(self.samples):.0f}% ({len(self.samples)} samples)"
        )


def model_stats(triton: TritonHandle) -> dict[str, int]:
    """Triton's cumulative statistics of the model: request count, nanoseconds per stage."""
    url = f"{triton.http_url}/v2/models/{MODEL}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (our localhost)
        stats = json.loads(response.read())["model_stats"][0]
    inference = stats["inference_stats"]
    out = {f"{stage}_ns": int(inference[stage]["ns"]) for stage in inference}
    out["requests"] = int(inference["success"]["count"])
    out["executions"] = int(stats.get("execution_count", 0))
    out["items"] = int(stats.get("inference_count", 0))
    return out


def describe_stats(before: dict[str, int], after: dict[str, int]) -> str:
    delta = {k: after[k] - before.get(k, 0) for k in after}
    requests = max(delta["requests"], 1)
    queue = delta.get("queue_ns", 0) / requests / 1e6
    compute = sum(delta.get(f"compute_{s}_ns", 0) for s in ("input", "infer", "output"))
    batch = delta["items"] / max(delta["executions"], 1)
    return (
        f"Triton per request: queue {queue:.2f} ms, compute {compute / requests / 1e6:.2f} ms "
        f"(input+infer+output); {delta['executions']} executions, average batch {batch:.1f}"
    )


def measured(triton: TritonHandle, gpu: bool, label: str, run: Any) -> float:
    """Run `run()` (returns items, seconds) with the GPU sampled and Triton's stats read."""
    before = model_stats(triton)
    with GpuSampler(gpu) as sampler:
        items, seconds = run()
    rate = items / seconds
    print(f"{label}: {rate:,.1f} items/s ({items} items in {seconds:.1f} s)")
    print(f"  {sampler.describe()}")
    print(f"  {describe_stats(before, model_stats(triton))}")
    return rate


class ShardRun:
    """The worker over one dataset: the plan runs when this is made, the shard when called
    (items succeeded, seconds of its pipeline); `manifest` is the shard's afterwards."""

    def __init__(self, triton: TritonHandle, kind: str, data: Path, tmp: Path) -> None:
        self.out = tmp / f"out-{kind}-{time.monotonic_ns()}"
        self.env = worker_env(triton, kind, data, self.out)
        self.manifest: dict[str, Any] = {}
        run_role("plan", self.env)

    def __call__(self) -> tuple[int, float]:
        run_role("shard", self.env)
        self.manifest = json.loads((self.out / "rounds/000/shard-00000/manifest.json").read_text())
        shutil.rmtree(self.out, ignore_errors=True)
        if self.manifest["succeeded"] != self.manifest["items"]:
            raise SystemExit(f"the worker predicted {self.manifest['succeeded']} items only")
        return int(self.manifest["succeeded"]), float(self.manifest["seconds"])


def ideal_run(items: int, batch: int, concurrency: int, triton: TritonHandle) -> Any:
    """Pre-serialized requests of the model's own input (built now), replayed over bare gRPC
    by the callable returned."""
    requests = []
    for start in range(0, items, batch):
        x = tensors(start, min(items, start + batch))
        requests.append(encode_request(MODEL, None, {INPUT: (x, "FP32")}, [OUTPUT]))

    def replay() -> tuple[int, float]:
        started = time.monotonic()
        asyncio.run(stub_ideal(triton.grpc_url, MODEL, requests, concurrency))
        return items, time.monotonic() - started

    return replay


def compare(  # noqa: PLR0917 (one run's settings)
    triton: TritonHandle, kind: str, data: Path, items: int, gpu: bool, tmp: Path
) -> None:
    warm = ShardRun(triton, kind, data, tmp)
    warm()  # picks the automatic batch size and concurrency
    batch, concurrency = warm.manifest["batchSize"], warm.manifest["concurrency"]
    print(f"== {kind}: {items} items, batch size {batch}, concurrency {concurrency}")
    rates = [measured(triton, gpu, "ideal client", ideal_run(items, batch, concurrency, triton))]
    worker_rate = measured(
        triton, gpu, "worker (shard pipeline)", ShardRun(triton, kind, data, tmp)
    )
    rates.append(
        measured(triton, gpu, "ideal client", ideal_run(items, batch, concurrency, triton))
    )
    print(f"worker/ideal-client ratio ({kind}): {worker_rate / statistics.fmean(rates):.2f}")


def run(images: int, tensor_items: int, gpu: str | None) -> None:
    """Serve ResNet-50 (or the --smoke stand-in when `gpu` is None) and measure both inputs."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    print(f"device: {gpu or 'none (--smoke: the CPU stand-in model)'}")
    repository = write_repository(tmp / "models", gpu is None)
    triton = start_triton(repository, models=[MODEL], timeout=600)
    try:
        print(separate_cores(triton))
        if images:
            directory = write_images(tmp / "images", images)
            compare(triton, "images", directory, images, gpu is not None, tmp)
        if tensor_items:
            data = write_tensors(tmp / "tensors.parquet", tensor_items)
            compare(triton, "tensors", data, tensor_items, gpu is not None, tmp)
    finally:
        triton.stop()
        shutil.rmtree(tmp, ignore_errors=True)
