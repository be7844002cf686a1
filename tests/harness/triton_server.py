"""A real `tritonserver` (from the nvidia-pytriton wheel) on free ports, for tests and benchmarks.

`start_triton(model_repo)` works from pytest, plain scripts and the cluster tier alike; the
`triton_server` fixture starts one per test session with the models in `tests/harness/models`.
PyTriton's own `Triton().bind()` fails on this interpreter, so we run the binary directly with
a model repository written on disk (DESIGN.md section 7).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MODELS_DIR = Path(__file__).parent / "models"
ALL_MODELS = tuple(sorted(p.name for p in MODELS_DIR.iterdir() if (p / "config.pbtxt").exists()))


def wheel_root() -> Path:
    root = Path(sysconfig.get_paths()["purelib"])
    if not (root / "pytriton" / "tritonserver" / "bin" / "tritonserver").exists():
        raise RuntimeError(f"tritonserver not found under {root}; run `make venv`")
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TritonHandle:
    """A running tritonserver: its addresses, model repository and log."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int
    model_repository: Path
    log_path: Path
    _workdir: Path | None = field(default=None, repr=False)

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://localhost:{self.http_port}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)


def write_model_repository(dest: Path, models: Sequence[str] = ALL_MODELS) -> Path:
    """Copy the named test models into a fresh model repository at `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in models:
        shutil.copytree(MODELS_DIR / name, dest / name, dirs_exist_ok=True)
    return dest


def backend_directory(dest: Path) -> Path:
    """backends/python with the stub matching this interpreter copied in (DESIGN.md 7)."""
    wheel = wheel_root() / "pytriton" / "tritonserver"
    python = dest / "python"
    shutil.copytree(wheel / "backends" / "python", python, dirs_exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    shutil.copy2(stub, python / stub.name)
    return dest


def start_triton(
    model_repository: Path,
    *,
    timeout: float = 90.0,
    models: Sequence[str] | None = None,
    extra_args: Sequence[str] = (),
    ports: Sequence[int] | None = None,
) -> TritonHandle:
    """Start tritonserver on free ports (or on `ports`: http, grpc, metrics, to start a stopped
    server again where its clients look for it) and wait until every model in the repository
    is ready. `extra_args` go to tritonserver (TLS, restricted protocols); readiness is read
    over HTTP."""
    wheel = wheel_root()
    workdir = Path(tempfile.mkdtemp(prefix="triton-"))
    backends = backend_directory(workdir / "backends")
    env = dict(os.environ)
    # The stub imports numpy: the interpreter's bin (the virtualenv) must come first on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    libs = str(wheel / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libs, env.get("LD_LIBRARY_PATH")) if p)
    # numpy's BLAS threads in the Python-backend stubs spin between requests: on a machine
    # with few cores that spinning takes the CPU the client needs (see benchmarks/README.md).
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    ports = list(ports) if ports else [_free_port() for _ in range(3)]
    log_path = workdir / "tritonserver.log"
    command = [
        str(wheel / "pytriton" / "tritonserver" / "bin" / "tritonserver"),
        f"--model-repository={model_repository}",
        f"--backend-directory={backends}",
        f"--http-port={ports[0]}",
        f"--grpc-port={ports[1]}",
        f"--metrics-port={ports[2]}",
        "--allow-metrics=false",
        "--log-verbose=0",
        *extra_args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    handle = TritonHandle(
        process, ports[0], ports[1], ports[2], model_repository, log_path, workdir
    )
    wanted = (
        models
        if models is not None
        else sorted(p.name for p in model_repository.iterdir() if (p / "config.pbtxt").exists())
    )
    try:
        _wait_ready(handle, wanted, timeout)
    except (RuntimeError, TimeoutError, KeyboardInterrupt):
        tail = handle.log_tail()
        handle.stop()
        raise RuntimeError(f"tritonserver did not become ready:\n{tail}") from None
    return handle


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our localhost)
            return bool(response.status == 200)
    except OSError:
        return False


def _wait_ready(handle: TritonHandle, models: Sequence[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    urls = [f"{handle.http_url}/v2/health/ready"]
    urls += [f"{handle.http_url}/v2/models/{name}/ready" for name in models]
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            raise RuntimeError(f"tritonserver exited with {handle.process.returncode}")
        if all(_ready(url) for url in urls):
            return
        time.sleep(0.3)
    raise TimeoutError(f"tritonserver not ready after {timeout}s")


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonHandle]:
    """One tritonserver per session serving every model in tests/harness/models."""
    repo = write_model_repository(tmp_path_factory.mktemp("model-repository"))
    handle = start_triton(repo)
    yield handle
    handle.stop()


class RestartableTriton:
    """A tritonserver of one test; `stop()` and `start()` keep its ports and repository."""

    def __init__(self, workdir: Path, models: tuple[str, ...]) -> None:
        self.repository = write_model_repository(workdir / "models", models)
        self.models = models
        self.handle: TritonHandle | None = start_triton(self.repository, models=list(models))
        self.ports = (self.handle.http_port, self.handle.grpc_port, self.handle.metrics_port)
        self.grpc_url = self.handle.grpc_url

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.process.kill()  # as a crash or a node loss: no draining
            self.handle.process.wait()
            self.handle.stop()
            self.handle = None

    def start(self) -> None:
        if self.handle is None:
            self.handle = start_triton(self.repository, models=list(self.models), ports=self.ports)


@contextmanager
def own_triton(workdir: Path, *models: str) -> Iterator[RestartableTriton]:
    triton = RestartableTriton(workdir, models)
    try:
        yield triton
    finally:
        triton.stop()
