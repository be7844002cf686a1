"""Kueue's controller manager as a host process beside the local control plane.

`hack/kueue/build.sh` builds `sigs.k8s.io/kueue/cmd/kueue` from the Go module proxy (cached by
version) and keeps the module's CRDs and webhook manifests beside the binary. `start_kueue`
runs the manager with the admin kubeconfig, set up as Kueue's own manifests set it up, except
that the API server reaches its webhooks by URL at the manager's loopback port instead of
through an in-cluster Service:
- its admission webhooks (only those of what it serves: batch/v1 Jobs and Kueue's kinds; a
  registration for a kind it does not serve would refuse every object of that kind) and the
  conversion webhooks of its CRDs that serve two versions (as its kustomize patches add them);
- its internal certificate management (the manager's default) on, over a certificate the
  harness issues for both the Service's DNS name and 127.0.0.1 and puts where Kueue's
  Deployment would have it (the Secret `kueue-webhook-server-cert` and the cert dir): Kueue
  checks and keeps it, and injects its CA into those webhooks. With Kueue's certificate
  management off, the manager insists on a metrics certificate at a fixed path in /etc.

    kueue = start_kueue(cluster)      # CRDs, webhooks, manager ready
    kueue.stop()                      # webhooks unregistered first, then the process ends
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.harness import procs
from tests.harness.pki import generate_webhook_pki
from tests.harness.procs import ClusterError
from tests.harness.served import read_manifests

if TYPE_CHECKING:
    from tests.harness.fixtures import Cluster

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "kueue" / "build.sh"
NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"  # Kueue's defaults: the names its cert rotator checks
SECRET_NAME = "kueue-webhook-server-cert"  # noqa: S105 (a Secret's name)
WEBHOOK_CONFIGS = {
    "MutatingWebhookConfiguration": "kueue-mutating-webhook-configuration",
    "ValidatingWebhookConfiguration": "kueue-validating-webhook-configuration",
}
# The CRDs whose conversion webhook Kueue's rotator injects (pkg/util/cert/cert.go).
CONVERTED = ("localqueues", "clusterqueues", "workloads", "cohorts", "multikueueclusters")
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
    metrics endpoint, Jobs with a queue-name label only."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {
            "enable": True,
            "webhookServiceName": SERVICE,
            "webhookSecretName": SECRET_NAME,
        },
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": ["batch/job"]},
    }


def webhook_configurations(manifests: str, *, port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """Kueue's webhook configurations, pointed at https://127.0.0.1:<port> instead of its
    in-cluster Service, keeping only the webhooks this manager serves."""
    configs = []
    for doc in yaml.safe_load_all(manifests):
        if not doc or doc.get("kind") not in WEBHOOK_CONFIGS:
            continue
        hooks = []
        for hook in doc.get("webhooks", []):
            path = hook["clientConfig"]["service"]["path"]
            if not any(part in path for part in SERVED_WEBHOOKS):
                continue
            hook["clientConfig"] = _url_client(port, path, ca_bundle)
            hooks.append(hook)
        configs.append(
            {
                "apiVersion": doc["apiVersion"],
                "kind": doc["kind"],
                "metadata": {"name": WEBHOOK_CONFIGS[doc["kind"]]},
                "webhooks": hooks,
            }
        )
    return configs


def crds_with_conversion(crd_dir: Path, *, port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """Kueue's CRDs; those that serve two versions convert through the manager's /convert."""
    crds = read_manifests(crd_dir)
    for crd in crds:
        if crd["spec"]["names"]["plural"] in CONVERTED:
            crd["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": _url_client(port, "/convert", ca_bundle),
                    "conversionReviewVersions": ["v1"],
                },
            }
    return crds


def _url_client(port: int, path: str, ca_bundle: bytes) -> dict[str, str]:
    return {
        "url": f"https://127.0.0.1:{port}{path}",
        "caBundle": base64.b64encode(ca_bundle).decode(),
    }


@dataclass
class KueueProcess:
    cluster: Cluster
    state_dir: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 40) -> str:
        return procs.log_tail(self.state_dir, "kueue", lines)

    def stop(self) -> None:
        """Unregister the webhooks first: left behind without a manager, they would refuse
        every Job (failurePolicy Fail) and every read of a converted kind's other version."""
        for kind, name in WEBHOOK_CONFIGS.items():
            self.cluster.kubectl("delete", kind.lower(), name, "--ignore-not-found", check=False)
        for plural in CONVERTED:
            self.cluster.kubectl(
                "patch", "crd", f"{plural}.kueue.x-k8s.io", "--type=merge",
                "-p", '{"spec": {"conversion": {"strategy": "None", "webhook": null}}}',
                check=False,
            )  # fmt: skip
        procs.stop([self.process.pid], grace=5.0)


def start_kueue(cluster: Cluster) -> KueueProcess:
    """Build (cached), install the CRDs and webhooks, start the manager; returns once it is
    ready and a Kueue object passes its webhooks."""
    if cluster.state_dir is None:
        raise ClusterError("Kueue runs as a host process beside the local control plane only")
    if KUEUE_BUILD_FAILURE:
        raise ClusterError(KUEUE_BUILD_FAILURE[0])
    home = build_kueue()
    started = time.monotonic()
    state_dir = cluster.state_dir
    webhook_port, health_port = procs.free_port(), procs.free_port()
    cert_dir = state_dir / "kueue-certs"
    generate_webhook_pki(cert_dir, ca_name="kueue-ca", dns_name=f"{SERVICE}.{NAMESPACE}.svc")
    ca = (cert_dir / "ca.crt").read_bytes()

    crds = crds_with_conversion(home / "crds", port=webhook_port, ca_bundle=ca)
    crd_dir = state_dir / "kueue-crds"
    crd_dir.mkdir(exist_ok=True)
    for crd in crds:
        (crd_dir / f"{crd['metadata']['name']}.yaml").write_text(yaml.safe_dump(crd))
    install = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(crd_dir), timeout=120
    )
    if install.returncode != 0:
        raise ClusterError(f"installing Kueue's CRDs failed: {install.stderr.strip()}")
    names = [f"crd/{crd['metadata']['name']}" for crd in crds]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names, timeout=90)
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "namespace": NAMESPACE},
        "type": "kubernetes.io/tls",
        "data": {
            name: base64.b64encode((cert_dir / name).read_bytes()).decode()
            for name in ("ca.crt", "ca.key", "tls.crt", "tls.key")
        },
    }
    cluster.apply(secret)
    hooks = webhook_configurations(
        (home / "webhook.yaml").read_text(), port=webhook_port, ca_bundle=ca
    )
    for hook in hooks:
        cluster.apply(hook)

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
        _wait_webhooks(kueue)
    except BaseException:
        kueue.stop()
        raise
    print(f"kueue: up in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
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
