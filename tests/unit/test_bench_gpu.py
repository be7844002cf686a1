"""`make bench-gpu` on a machine without a GPU (every machine of this project's CI): it says so
and exits 0 without a figure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"
NO_DRIVER = """#!/bin/sh
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2
exit 9
"""


@pytest.mark.parametrize("nvidia_smi", [None, NO_DRIVER, "#!/bin/sh\nexit 0\n"])
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path: Path, nvidia_smi: str | None) -> None:
    """No nvidia-smi, one that finds no driver, one that lists no device."""
    if nvidia_smi is not None:
        fake = tmp_path / "nvidia-smi"
        fake.write_text(nvidia_smi)
        fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{Path(sys.executable).parent}:/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("bench-gpu: no NVIDIA GPU on this machine"), done.stdout
    assert "nothing measured" in done.stdout
    assert "items/s" not in done.stdout
    has_gpu = subprocess.run(
        [sys.executable, str(SCRIPT), "--has-gpu"], env=env, timeout=120, check=False
    )
    assert has_gpu.returncode == 1, "make bench-gpu installs torch only where a GPU is"
