"""Bad input to the cluster tooling: a clear message and a non-zero exit, never a hang."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import procs
from tests.harness.cluster import BUILD_SCRIPT, REPO, cache_bin_dir

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


def cluster_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.harness.cluster", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def run_build(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_build_without_go_says_so(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BATCHPREDICT_CACHE": str(tmp_path)}
    env["GO"] = "go-that-does-not-exist"

    result = run_build(env)

    assert result.returncode == 2
    assert "no Go toolchain" in result.stderr
    assert not result.stdout


def test_up_without_binaries_or_go_fails_with_the_reason(tmp_path: Path) -> None:
    env = {"BATCHPREDICT_CACHE": str(tmp_path / "cache"), "GO": "go-that-does-not-exist"}

    result = cluster_cli("up", "--state-dir", str(tmp_path / "state"), env=env)

    assert result.returncode == 1
    assert "no Go toolchain" in result.stderr
    assert "cluster up failed: building the control plane binaries failed" in result.stderr
    assert "export KUBECONFIG" not in result.stdout


def test_failing_build_reports_the_log(tmp_path: Path) -> None:
    fake_go = tmp_path / "go"
    fake_go.write_text(
        '#!/bin/sh\nif [ "$1" = env ]; then echo go1.26.8; exit 0; fi\n'
        'echo "k8s.io/foo: undefined: bar" >&2; exit 1\n'
    )
    fake_go.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BATCHPREDICT_CACHE": str(tmp_path)}
    env["GO"] = str(fake_go)

    result = run_build(env)

    assert result.returncode == 3
    assert "undefined: bar" in result.stderr
    assert "building the control plane failed; full log in" in result.stderr


def test_too_old_go_is_refused(tmp_path: Path) -> None:
    old_go = tmp_path / "go"
    old_go.write_text("#!/bin/sh\necho go1.22.1\n")
    old_go.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BATCHPREDICT_CACHE": str(tmp_path)}
    env["GO"] = str(old_go)

    result = run_build(env)

    assert result.returncode == 2
    assert "too old" in result.stderr


def test_state_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("not a directory")

    result = cluster_cli("up", "--state-dir", str(state))

    assert result.returncode == 1
    assert "is not a directory" in result.stderr


def test_busy_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        result = cluster_cli("up", "--state-dir", str(tmp_path / "s"), "--port", str(port))

    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 (asked for the API server) is already in use" in result.stderr


def start_sleeping_pod(state: Path) -> int:
    """Run a pod that sleeps on the cluster in `state`; the pid of its process."""
    kubectl = [str(cache_bin_dir() / "kubectl"), "--kubeconfig", str(state / "kubeconfig")]
    run = ["run", "sleeper", "--image=x", "--restart=Never", "--command", "--"]
    subprocess.run([*kubectl, *run, "sleep", "600"], check=True, capture_output=True, timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = subprocess.run(
            [*kubectl, "get", "pod", "sleeper", "-o", "jsonpath={.status.containerStatuses[0]}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        status = json.loads(got.stdout or "{}")
        if "running" in status.get("state", {}):
            return int(status["containerID"].removeprefix("local://"))
        time.sleep(0.3)
    raise AssertionError("the sleeper pod did not start")


@pytest.mark.cluster
def test_up_over_stale_state_then_down_stops_everything(tmp_path: Path) -> None:
    if not all((cache_bin_dir() / b).exists() for b in BINARIES):
        pytest.skip("needs the control plane binaries (make cluster-build)")
    state = tmp_path / "state"
    (state / "etcd" / "member").mkdir(parents=True)
    (state / "etcd" / "member" / "junk").write_text("left by a crashed run")
    (state / "pids").mkdir()
    (state / "pids" / "kube-apiserver.pid").write_text("999999\n")

    up = cluster_cli("up", "--state-dir", str(state))
    again = cluster_cli("up", "--state-dir", str(state))
    sleeper = start_sleeping_pod(state)
    # A crashed node agent leaves its containers behind; down must still find them.
    os.kill(procs.pid_from_file(state / "pids" / "node-agent.pid") or 0, signal.SIGKILL)
    pids = procs.marked_pids(state.absolute())
    down = cluster_cli("down", "--state-dir", str(state))
    down_again = cluster_cli("down", "--state-dir", str(state))

    assert up.returncode == 0, up.stderr
    assert "removing the state of a stopped cluster" in up.stderr
    assert up.stdout.splitlines()[-1] == f"export KUBECONFIG={state / 'kubeconfig'}"
    assert again.returncode == 0
    assert "already running" in again.stderr
    assert again.stdout.splitlines()[-1] == up.stdout.splitlines()[-1]
    assert sleeper in pids
    assert len(pids) >= 5  # etcd, apiserver, controller manager, scheduler, the pod
    assert down.returncode == 0
    assert not [pid for pid in pids if procs.alive(pid)]
    assert not procs.marked_pids(state.absolute())
    assert down_again.returncode == 0
    assert "nothing was running" in down_again.stderr
