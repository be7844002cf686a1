"""Fixtures of the operator tier: the CRDs installed, the operator running as a subprocess
against the test cluster, a Triton server, and helpers to follow a BatchPrediction."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml

from tests.e2e.invariant import assert_each_item_once, assert_run_truth
from tests.harness import images
from tests.harness.fixtures import Cluster
from tests.harness.served import install_crds
from tests.harness.triton_server import TritonHandle

__all__ = ["assert_each_item_once", "assert_run_truth"]  # every e2e run ends with these

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
WORKER_CLUSTER_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "batchpredict-worker"},
    # The worker writes its shard's progress report and nothing else.
    "rules": [
        {
            "apiGroups": ["batchpredict.io"],
            "resources": ["batchpredictionshards"],
            "verbs": ["create", "patch"],
        }
    ],
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """test_containers.py needs the image: built before any test runs (a cold build is
    minutes), and only when a collected test uses it."""
    images.prebuild(config, items)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OperatorProcess:
    """`batchpredict-operator` as a subprocess, the way a Deployment would run it."""

    cluster: Cluster
    config_path: Path
    log_path: Path
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None
    base_config: dict[str, Any] = field(default_factory=dict)
    args: tuple[str, ...] = ()  # more command-line arguments (--peering NAME)

    def start(self) -> None:
        env = {**self.cluster.env(), "BATCHPREDICT_CONFIG": str(self.config_path)}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "batchpredict-operator"), "--liveness-port", "0", *self.args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def reconfigure(self, **changes: Any) -> None:
        """Restart with configuration `changes` over the defaults (none: the defaults)."""
        self.stop()
        config = {**self.base_config, **changes}
        self.config_path.write_text(yaml.safe_dump(config))
        self.start()

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies under the operator."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())


@pytest.fixture(scope="session")
def installed_crds(cluster: Cluster) -> Cluster:
    install_crds(cluster.kubectl, REPO / "crds")
    cluster.apply(WORKER_CLUSTER_ROLE)
    cluster.kubectl("apply", "-f", str(REPO / "deploy" / "started-by-policy.yaml"))
    return cluster


# Package scope: this operator watches every namespace, so it stops when the e2e tier ends
# and never handles the runs of the tiers after it (chart, demo install their own).
@pytest.fixture(scope="package")
def operator_process(
    installed_crds: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    workdir = tmp_path_factory.mktemp("operator")
    metrics_port = free_port()
    config = {
        "workerCommand": [str(VENV_BIN / "batchpredict-worker")],
        "statusIntervalSeconds": 1.0,
        "metricsPort": metrics_port,
    }
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    operator = OperatorProcess(
        installed_crds, config_path, workdir / "operator.log", metrics_port, base_config=config
    )
    operator.start()
    yield operator
    operator.stop()


def write_items(path: Path, values: list[float]) -> Path:
    """JSONL items `{"id": "item-N", "x": values[N]}`."""
    with path.open("w") as out:
        for n, x in enumerate(values):
            out.write(json.dumps({"id": f"item-{n}", "x": x}) + "\n")
    return path


def wait_until(
    cluster: Cluster, name: str, namespace: str, check: Any, what: str, timeout: float = 120
) -> dict[str, Any]:
    """Poll the BatchPrediction until `check(status)` holds; its status."""

    def status_if_done() -> dict[str, Any] | None:
        status = get_bp(cluster, name, namespace).get("status") or {}
        return status if check(status) else None

    return cluster.wait_for(status_if_done, what, timeout=timeout)


# The `slow` model with small chunks: a run that lasts long enough to act on mid-way, and
# commits output often enough that something is kept when it stops.
SLOW: dict[str, Any] = {"model": {"name": "slow"}, "batching": {"batchSize": 8, "concurrency": 1}}
SLOW_SMALL_CHUNKS: dict[str, Any] = {
    **SLOW,
    "worker": {"env": [{"name": "BATCHPREDICT_CHUNK_ITEMS", "value": "40"}]},
}


def start_slow_run(
    cluster: Cluster,
    *,
    name: str,
    namespace: str,
    triton: TritonHandle,
    dataset: Path,
    output: Path,
    succeeded: int,
) -> None:
    """Apply a slow run and return once at least `succeeded` items are done."""
    cluster.apply(batch_prediction(name, triton, dataset, output, **SLOW_SMALL_CHUNKS), namespace)
    wait_until(
        cluster,
        name,
        namespace,
        lambda s: (s.get("items") or {}).get("succeeded", 0) >= succeeded,
        f"{succeeded} items done",
    )


def pods_of(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return list(cluster.get("pods", namespace=namespace)["items"])


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """3,000 JSONL items `{"id": "item-N", "x": N}`."""
    return write_items(tmp_path / "items.jsonl", list(range(3000)))


class HasGrpcUrl(Protocol):
    """A Triton server's address: a TritonHandle, or a test's own RestartableTriton."""

    @property
    def grpc_url(self) -> str: ...


def batch_prediction(
    name: str, triton: HasGrpcUrl, dataset: Path, output: Path, **spec: Any
) -> dict[str, Any]:
    """A BatchPrediction of `dataset` through the test model `double` (spec overrides)."""
    body: dict[str, Any] = {
        "model": {"name": "double"},
        "triton": {"url": triton.grpc_url},
        "input": {"uri": str(dataset), "format": "jsonl", "idField": "id"},
        "output": {"uri": str(output)},
        "parallelism": 2,
        "shards": 4,
    }
    body.update(spec)
    return {
        "apiVersion": "batchpredict.io/v1alpha1",
        "kind": "BatchPrediction",
        "metadata": {"name": name},
        "spec": body,
    }


def child_job(cluster: Cluster, name: str, namespace: str, suffix: str) -> str:
    """The name of a run's Job: `<name>-<uid8>-<suffix>` (suffix plan, r0, finalize...)."""
    uid = get_bp(cluster, name, namespace)["metadata"]["uid"]
    return f"{name}-{uid[:8]}-{suffix}"


def get_bp(cluster: Cluster, name: str, namespace: str) -> dict[str, Any]:
    found = cluster.get("batchpredictions.batchpredict.io", name, namespace)
    assert found is not None, f"BatchPrediction {name} disappeared"
    return dict(found)


def wait_for_phase(
    cluster: Cluster,
    *,
    name: str,
    namespace: str,
    phases: set[str],
    timeout: float = 180,
    operator: OperatorProcess | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = get_bp(cluster, name, namespace)
        if (body.get("status") or {}).get("phase") in phases:
            return body
        time.sleep(0.5)
    detail = operator.log_tail() if operator else ""
    pods = cluster.kubectl("get", "pods,jobs", "-n", namespace, check=False).stdout
    raise AssertionError(
        f"{name} never reached {phases}; status: {json.dumps(body.get('status'), indent=1)}\n"
        f"{pods}\noperator log:\n{detail}"
    )
