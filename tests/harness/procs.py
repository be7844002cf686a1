"""Starting, finding and stopping the processes of one local cluster.

Every process the harness starts (components, the node agent, and the containers the agent runs)
carries `BATCHPREDICT_CLUSTER_DIR=<state dir>` in its environment. Stopping a cluster signals the
process groups named in its pid files and then every process still carrying that marker, so
nothing it started survives `cluster-down`, even after a crash left a pid file behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

MARKER = "BATCHPREDICT_CLUSTER_DIR"


class ClusterError(RuntimeError):
    """A problem the user can act on; the CLI prints it and exits non-zero."""


def free_port() -> int:
    """A loopback TCP port that is free now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_port_free(port: int, what: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            raise ClusterError(
                f"port {port} on 127.0.0.1 (asked for {what}) is already in use: {err.strerror}; "
                "stop whatever listens there or pick another port"
            ) from err


def marker_env(state_dir: Path) -> dict[str, str]:
    return {MARKER: str(state_dir)}


def spawn(
    name: str,
    argv: Sequence[str],
    state_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session, output to logs/<name>.log, pid in pids/<name>.pid."""
    logs, pids = state_dir / "logs", state_dir / "pids"
    logs.mkdir(parents=True, exist_ok=True)
    pids.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {}), **marker_env(state_dir)}
    full_env.pop("KUBECONFIG", None)
    with (logs / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    (pids / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc


def log_tail(state_dir: Path, name: str, lines: int = 15) -> str:
    path = state_dir / "logs" / f"{name}.log"
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"  | {line}" for line in text) + f"\n  (full log: {path})"


def carries_marker(pid: int, state_dir: Path) -> bool:
    """Whether process `pid` was started for the cluster in `state_dir`."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER}={state_dir}".encode() in environ.split(b"\0")


def marked_pids(state_dir: Path) -> list[int]:
    """Every live process carrying this cluster's marker (ours, its children, containers)."""
    found = []
    for entry in Path("/proc").iterdir():
        pid = int(entry.name) if entry.name.isdigit() else os.getpid()
        if pid != os.getpid() and carries_marker(pid, state_dir):
            found.append(pid)
    return found


def pid_from_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop(pids: Sequence[int], grace: float = 10.0) -> None:
    """SIGTERM each process group, wait up to `grace` seconds, then SIGKILL what is left."""
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            _signal_group(pid, signal.SIGKILL)


def stop_cluster_processes(state_dir: Path, order: Sequence[str]) -> list[str]:
    """Stop the processes named in pids/ (in `order`, then the rest), then any marked stray."""
    stopped: list[str] = []
    pid_dir = state_dir / "pids"
    files = sorted(pid_dir.glob("*.pid")) if pid_dir.is_dir() else []
    rank = {name: i for i, name in enumerate(order)}
    for path in sorted(files, key=lambda p: rank.get(p.stem, len(rank))):
        pid = pid_from_file(path)
        if pid is not None and alive(pid) and carries_marker(pid, state_dir):
            stop([pid])
            stopped.append(path.stem)
        path.unlink(missing_ok=True)
    strays = marked_pids(state_dir)
    if strays:
        stop(strays, grace=3.0)
        stopped.extend(f"pid {pid}" for pid in strays)
    return stopped


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock so that concurrent up/down calls on one state dir take turns."""
    import fcntl  # noqa: PLC0415 - POSIX only, like the rest of the harness

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
