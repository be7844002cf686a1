"""Kueue's controller manager as a host process beside the local control plane.

`hack/kueue/build.sh` builds `sigs.k8s.io/kueue/cmd/kueue` from the Go module proxy (cached by
version) and keeps the module's CRDs and webhook manifests beside the binary. `start_kueue`
installs those CRDs, runs the manager with the admin kubeconfig, and registers its webhooks at
the manager's loopback port: the API server calls them by URL, over TLS with the cluster's own
serving certificate (tests/harness/pki.py, valid for 127.0.0.1), so Kueue's internal
certificate management (made for an in-cluster Service) is off. Only the webhooks of what this
manager serves are registered (batch/v1 Jobs and Kueue's own kinds): a registration for a kind
it does not serve would refuse every object of that kind.

    kueue = start_kueue(cluster)      # CRDs, webhooks, manager ready
    kueue.stop()                      # webhooks unregistered first, then the process ends
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.harness import procs
from tests.harness.pki import Pki
from tests.harness.procs import ClusterError
from tests.harness.served import install_crds

if TYPE_CHECKING:
    from tests.harness.fixtures import Cluster

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "kueue" / "build.sh"
NAMESPACE = "kueue-system"
WEBHOOK_CONFIGS = ("kueue-mutating-webhooks", "kueue-validating-webhooks")
# Paths of the webhooks this manager serves with frameworks: [batch/job].
SERVED_WEBHOOKS = ("-batch-v1-job", "-kueue-x-k8s-io-")
START_TIMEOUT = 90.0
# Set when the build before the session failed, so that the Kueue tests fail at once with it.
KUEUE_BUILD_FAILURE: list[str] = []


def kueue_built() -> bool:
    """Whether hack/kueue/build.sh has nothing to do (its cache is complete)."""
    text = BUILD_SCRIPT.read_text()
    version = text.split('KUEUE_VERSION="${KUEUE_VERSION:-', 1)[1].split("}", 1)[0]
    cache = os.environ.get("BATCHPREDICT_CACHE") or str(Path.home() / ".cache" / "batchpredict")
    home = Path(cache) / f"kueue-{version}"
    return (home / "kueue").exists() and (home / "webhook.yaml").exists()


def build_kueue() -> Path:
    """Run hack/kueue/build.sh (a no-op when cached); the directory it prints."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    if result.returncode != 0:
        raise ClusterError(f"building Kueue failed ({BUILD_SCRIPT})")
    return Path(result.stdout.strip().splitlines()[-1])


def manager_config(*, webhook_port: int, health_port: int, cert_dir: Path) -> dict[str, Any]:
    """Kueue's Configuration for a host process: loopback ports, no leader election, no
    metrics endpoint, the harness's certificate, Jobs with a queue-name label only."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": ["batch/job"]},
    }


def webhook_configurations(manifests: str, *, port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """Kueue's webhook configurations, pointed at https://127.0.0.1:<port> instead of its
    in-cluster Service, keeping only the webhooks this manager serves."""
    configs = []
    names = dict(zip(("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"),
                     WEBHOOK_CONFIGS, strict=True))  # fmt: skip
    for doc in yaml.safe_load_all(manifests):
        if not doc or doc.get("kind") not in names:
            continue
        hooks = []
        for hook in doc.get("webhooks", []):
            path = hook["clientConfig"]["service"]["path"]
            if not any(part in path for part in SERVED_WEBHOOKS):
                continue
            hook["clientConfig"] = {
                "url": f"https://127.0.0.1:{port}{path}",
                "caBundle": base64.b64encode(ca_bundle).decode(),
            }
            hooks.append(hook)
        configs.append(
            {
                "apiVersion": doc["apiVersion"],
                "kind": doc["kind"],
                "metadata": {"name": names[doc["kind"]]},
                "webhooks": hooks,
            }
        )
    return configs


@dataclass
class KueueProcess:
    cluster: Cluster
    state_dir: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 40) -> str:
        return procs.log_tail(self.state_dir, "kueue", lines)

    def stop(self) -> None:
        """Unregister the webhooks first: with them left behind and no manager, the API
        server would refuse every Job (their failurePolicy is Fail)."""
        for name in WEBHOOK_CONFIGS:
            kind = "mutatingwebhookconfiguration" if "mutating" in name else (
                "validatingwebhookconfiguration")  # fmt: skip
            self.cluster.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        procs.stop([self.process.pid], grace=5.0)


def start_kueue(cluster: Cluster) -> KueueProcess:
    """Build (cached), install the CRDs, start the manager, register its webhooks; returns
    once its readiness endpoint answers and it admits a Workload create (webhooks served)."""
    if cluster.state_dir is None:
        raise ClusterError("Kueue runs as a host process beside the local control plane only")
    if KUEUE_BUILD_FAILURE:
        raise ClusterError(KUEUE_BUILD_FAILURE[0])
    home = build_kueue()
    state_dir = cluster.state_dir
    install_crds(cluster.kubectl, home / "crds")
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    pki = Pki(state_dir / "pki")
    cert_dir = state_dir / "kueue-certs"
    cert_dir.mkdir(exist_ok=True)
    shutil.copyfile(pki.serving_cert, cert_dir / "tls.crt")
    shutil.copyfile(pki.serving_key, cert_dir / "tls.key")
    webhook_port, health_port = procs.free_port(), procs.free_port()
    config_path = state_dir / "kueue-config.yaml"
    config = manager_config(webhook_port=webhook_port, health_port=health_port, cert_dir=cert_dir)
    config_path.write_text(yaml.safe_dump(config))
    process = procs.spawn(
        "kueue",
        [
            str(home / "kueue"),
            f"--config={config_path}",
            f"--kubeconfig={cluster.kubeconfig}",
            # Its on-demand visibility API needs an APIService routed to an in-cluster Service.
            "--feature-gates=VisibilityOnDemand=false",
        ],
        state_dir,
    )
    kueue = KueueProcess(cluster, state_dir, process)
    try:
        _wait_ready(kueue, health_port)
        hooks = webhook_configurations(
            (home / "webhook.yaml").read_text(),
            port=webhook_port,
            ca_bundle=pki.ca_cert.read_bytes(),
        )
        for hook in hooks:
            cluster.apply(hook)
        _wait_webhooks(kueue)
    except BaseException:
        kueue.stop()
        raise
    return kueue


def _wait_ready(kueue: KueueProcess, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if kueue.process.poll() is not None:
            raise ClusterError(f"kueue exited with {kueue.process.returncode}:\n{kueue.log_tail()}")
        try:
            url = f"http://127.0.0.1:{port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.3)
    raise ClusterError(f"kueue not ready after {START_TIMEOUT:.0f} s:\n{kueue.log_tail()}")


def _wait_webhooks(kueue: KueueProcess) -> None:
    """A server-side dry run of a ResourceFlavor passes through Kueue's webhooks once the API
    server reaches them."""
    probe = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ResourceFlavor",
        "metadata": {"name": "webhook-probe"},
    }
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        result = kueue.cluster.kubectl(
            "create", "--dry-run=server", "-f", "-", stdin=json.dumps(probe), check=False
        )
        if result.returncode == 0:
            return
        last = result.stderr.strip()
        time.sleep(0.5)
    raise ClusterError(f"Kueue's webhooks not reachable: {last}\n{kueue.log_tail()}")
