"""The demo's platform: a Kubernetes cluster whose pods run in containers from the image
`make images` builds, the operator installed with the Helm chart, and Triton serving the demo
model. Everything it starts is recorded in `.demo/state.json` so that `make demo-down` stops
exactly that.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from tests.chart.helm import CHART, build_helm
from tests.harness import images, served
from tests.harness.cluster import LocalCluster
from tests.harness.fixtures import kubectl_binary
from tests.harness.runc import RUNTIME_LABEL
from tests.harness.triton_server import TritonHandle, start_triton

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / ".demo"
RELEASE = "batchpredict"
OPERATOR_NAMESPACE = "batchpredict-system"
RUN_NAMESPACE = "batchpredict-demo"


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and what to look at."""


@dataclass
class DemoState:
    """What this demo started (written to .demo/state.json)."""

    kubeconfig: str
    local_cluster: bool
    triton_pid: int | None = None
    triton_grpc_url: str | None = None
    triton_workdir: str | None = None
    triton_log: str | None = None
    s3_pid: int | None = None
    s3_endpoint: str | None = None

    @classmethod
    def load(cls, directory: Path) -> DemoState | None:
        path = directory / "state.json"
        return cls(**json.loads(path.read_text())) if path.exists() else None

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "state.json").write_text(json.dumps(asdict(self), indent=2))


@dataclass(frozen=True)
class Kube:
    """kubectl and helm against one cluster."""

    kubeconfig: Path
    helm_home: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = self.env() | {
            "HELM_CACHE_HOME": str(self.helm_home / "cache"),
            "HELM_CONFIG_HOME": str(self.helm_home / "config"),
            "HELM_DATA_HOME": str(self.helm_home / "data"),
        }
        result = subprocess.run(
            [build_helm(), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise DemoError(f"helm {' '.join(args)} failed:\n{result.stderr.strip()}")
        return result


def wait_for(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- cluster ---------------------------------------------------------------------------------


def cluster_up(state_dir: Path) -> tuple[Path, bool]:
    """$KUBECONFIG when set (an existing cluster), else the demo's own local cluster."""
    external = os.environ.get("KUBECONFIG")
    if external:
        return Path(external), False
    return LocalCluster(state_dir / "cluster").up(), True


def operator_name(release: str = RELEASE) -> str:
    """The chart's full name: the release's name when it holds the chart's name (helm's rule)."""
    return release if "batchpredict" in release else f"{release}-batchpredict"


OPERATOR_NAME = operator_name()


# -- containers ------------------------------------------------------------------------------

NODE_AGENT_OS = "batchpredict test node agent"  # its nodes' status.nodeInfo.osImage
RESTRICTED = (
    "pod-security.kubernetes.io/enforce=restricted",
    "pod-security.kubernetes.io/enforce-version=latest",
)


def containers_possible(kube: Kube) -> str | None:
    """None when the pods can run in containers from the local image, else why not: runc and
    `make images` need root, and only this repository's node agent runs that image."""
    nodes = json.loads(kube.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    if not nodes or any(
        n["status"].get("nodeInfo", {}).get("osImage") != NODE_AGENT_OS for n in nodes
    ):
        return "the cluster's nodes are not this repository's node agent"
    if os.geteuid() != 0:
        return "not root: runc and `make images` need root"
    return None


def build_image() -> str:
    """`make images` (cached by content: a relink when nothing changed); the image's size."""
    try:
        directory = images.build()
    except images.ImageBuildError as error:
        raise DemoError(f"{error}; its output is above") from error
    return str(json.loads((directory / "image.json").read_text())["sizeHuman"])


def prepare_namespace(kube: Kube, namespace: str, containers: bool) -> None:
    """`namespace` under Pod Security "restricted"; with `containers` the local node agent runs
    its pods with runc from their images (a label other clusters ignore)."""
    kube.kubectl("create", "namespace", namespace, check=False)
    runtime = f"{RUNTIME_LABEL}={'runc' if containers else 'process'}"
    kube.kubectl("label", "--overwrite", "namespace", namespace, runtime, *RESTRICTED)


# -- operator --------------------------------------------------------------------------------


def install_crds(kube: Kube) -> None:
    """The chart's CRDs, applied first so a re-run gets updated ones (helm skips existing),
    and served: on a cluster just started, Established alone is not enough."""
    served.install_crds(kube.kubectl, CHART / "crds")


def install_operator(
    kube: Kube,
    workdir: Path,
    *,
    namespace: str = OPERATOR_NAMESPACE,
    watch_namespaces: Sequence[str] = (),
    release: str = RELEASE,
    from_image: bool = True,
) -> None:
    """`helm upgrade --install` the chart into `namespace` and wait for its pod. It watches
    every namespace unless `watch_namespaces` are given (the chart's namespaced mode). With
    `from_image` the operator and its pods use the image `make images` built, on the node only."""
    kube.kubectl("create", "namespace", namespace, check=False)
    values: dict[str, object] = {
        "watchNamespaces": list(watch_namespaces),
        "statusIntervalSeconds": 1,
        # Pods of the local node agent share the host's network: free ports, not 8080/8081.
        "metrics": {"port": free_port()},
        "operator": {"livenessPort": free_port()},
    }
    if from_image:
        repository, tag = images.IMAGE.rsplit(":", 1)
        values["image"] = {"repository": repository, "tag": tag, "pullPolicy": "Never"}
    values_file = workdir / "operator-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    kube.helm(
        "upgrade", "--install", release, str(CHART),
        "--namespace", namespace,
        "--values", str(values_file),
        "--wait", "--timeout", "180s",
    )  # fmt: skip


def uninstall_operator(
    kube: Kube, namespace: str = OPERATOR_NAMESPACE, release: str = RELEASE
) -> None:
    kube.helm("uninstall", release, "--namespace", namespace, "--ignore-not-found", "--wait")


# -- Triton ----------------------------------------------------------------------------------


def start_model_server(model_repository: Path, models: Sequence[str]) -> TritonHandle:
    """tritonserver from the wheel (tests/harness/triton_server.py), left running on return."""
    return start_triton(model_repository, models=models, timeout=120)


def _is_tritonserver(pid: int) -> bool:
    try:
        return "tritonserver" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def stop_model_server(state: DemoState) -> bool:
    """Stop the Triton a demo started (by its recorded pid); True if one was running."""
    pid = state.triton_pid
    if pid is None or not _is_tritonserver(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _is_tritonserver(pid):
        time.sleep(0.2)
    if _is_tritonserver(pid):
        os.kill(pid, signal.SIGKILL)
    return True
