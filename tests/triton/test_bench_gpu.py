"""benchmarks/gpu.py's whole path on CPU (`--smoke`: a numpy stand-in for ResNet-50 with the
same tensors in and out), so the GPU benchmark still runs when a GPU machine is lent: the model
repository, the image and tensor datasets, the worker and the ideal client, Triton's statistics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.triton

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def test_the_gpu_benchmark_runs_end_to_end_with_the_cpu_stand_in() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--images", "8", "--tensors", "8"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    for kind in ("images", "tensors"):
        assert f"== {kind}: 8 items" in out, out
        assert f"worker/ideal-client ratio ({kind}): " in out, out
    assert out.count("worker (shard pipeline): ") == 2
    assert out.count("Triton per request: queue ") == 6
    assert "GPU utilisation: not sampled" in out
