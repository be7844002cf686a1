"""The node agent's stand-in for NVIDIA's Triton image (process mode): a container of an
`nvcr.io/nvidia/tritonserver` image whose command is `tritonserver` runs the real `tritonserver`
binary of the nvidia-pytriton wheel, through this script.

    python tests/harness/triton_standin.py ARGS...     (what `tritonserver ARGS` becomes)

It does what the image would: pod paths in the arguments (`--model-repository=/models`) are
resolved under the container's root (`BATCHPREDICT_CONTAINER_ROOT`, where the node agent links
each volumeMount), the Python backend and its stub go to the container's /tmp (its emptyDir:
nothing else is written), the wheel's libraries are put on LD_LIBRARY_PATH, and the binary
replaces this process (exec), so the agent's signals reach tritonserver itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver"
PATH_ARGS = ("--model-repository=",)


def standin_argv(image: str, argv: list[str]) -> list[str]:
    """The local argv of a container: Triton's image and command become this script."""
    if image.startswith((TRITON_IMAGE + ":", TRITON_IMAGE + "@")) and argv[:1] == ["tritonserver"]:
        return [sys.executable, str(Path(__file__).resolve()), *argv[1:]]
    return argv


def local_args(args: list[str], root: Path) -> list[str]:
    """Pod paths of the arguments resolved under the container's root (URIs stay)."""
    out = []
    for arg in args:
        local = arg
        for prefix in PATH_ARGS:
            value = arg.removeprefix(prefix)
            if arg.startswith(prefix) and value.startswith("/"):
                local = prefix + str(root / value.lstrip("/"))
        out.append(local)
    return out


def main() -> None:
    sys.path.insert(0, str(REPO))
    from tests.harness.triton_server import backend_directory, wheel_root  # noqa: PLC0415

    root = Path(os.environ.get("BATCHPREDICT_CONTAINER_ROOT", "/"))
    backends = backend_directory(root / "tmp" / "backends")
    wheel = wheel_root()
    env = dict(os.environ)
    libs = str(wheel / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libs, env.get("LD_LIBRARY_PATH")) if p)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    binary = wheel / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    args = [*local_args(sys.argv[1:], root), f"--backend-directory={backends}"]
    os.execve(binary, [str(binary), *args], env)  # noqa: S606 (the wheel's binary, our args)


if __name__ == "__main__":
    main()
