"""ResNet-50 on a GPU through Triton: the worker end to end over images and over tensors.

    make bench-gpu        (installs the `gpu-bench` extra, torch and NVML, only where a GPU is)

With no NVIDIA GPU (nvidia-smi missing or listing none) it says so and exits 0, measuring
nothing. Otherwise, in one process run:

1. builds ResNet-50 with random weights (torchvision; nothing downloaded), traced to TorchScript,
   into a model repository: `resnet50`, a Python-backend model that runs the TorchScript on the
   GPU in FP16 with Triton's dynamic batching (the nvidia-pytriton wheel's tritonserver carries
   the Python backend only; NVIDIA's Triton image would serve the same model.pt with its
   PyTorch backend);
2. starts that tritonserver on the first half of the cores, the clients on the others (a worker
   pod has cores of its own beside a GPU Triton);
3. for images (JPEG files, the worker decodes, resizes and normalizes them) and for tensors
   (Parquet rows of 3x224x224 floats): the worker (plan + one shard, `batchpredict-worker`
   processes) between two runs of an ideal client that replays pre-serialized requests at the
   worker's batch size and concurrency;
4. prints for each run: items/s, the GPU's utilisation sampled through NVML (or nvidia-smi)
   every 100 ms, Triton's queue time against compute time per request and its average batch
   (from /v2/models/resnet50/stats), and the worker/ideal-client ratio.

`--smoke` runs the same path on CPU with a numpy stand-in for ResNet-50 (same tensors in and
out, no torch, no GPU, no figures worth keeping): tests/triton/test_bench_gpu.py runs it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def gpu_name() -> str | None:
    """The first GPU nvidia-smi lists; None without a driver or a device."""
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [line.strip() for line in listed.stdout.splitlines() if line.strip()]
    return names[0] if listed.returncode == 0 and names else None


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=2048, help="JPEG files (0: skip)")
    parser.add_argument("--tensors", type=int, default=1024, help="Parquet rows (0: skip)")
    parser.add_argument("--smoke", action="store_true", help="CPU stand-in model, no GPU")
    parser.add_argument(
        "--has-gpu", action="store_true", help="exit 0 when a GPU is present, 1 otherwise"
    )
    args = parser.parse_args()
    if args.has_gpu:
        return 0 if gpu_name() else 1
    gpu = None if args.smoke else gpu_name()
    if gpu is None and not args.smoke:
        print(
            "bench-gpu: no NVIDIA GPU on this machine (nvidia-smi is missing or lists no "
            "device): nothing measured. Run `make bench-gpu` where a GPU and its driver are."
        )
        return 0
    from gpu_run import run  # noqa: PLC0415 (numpy, pyarrow, Triton: only once a GPU was found)

    run(args.images, args.tensors, gpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
