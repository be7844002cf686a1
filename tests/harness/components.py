"""The control plane's components: their command lines, kubeconfigs and the test nodes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.pki import Pki


@dataclass
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kubelet: int


def etcd_args(state_dir: Path, p: Ports) -> list[str]:
    client, peer = f"http://127.0.0.1:{p.etcd}", f"http://127.0.0.1:{p.etcd_peer}"
    return [
        "--name=local",
        f"--data-dir={state_dir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=local={peer}",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


# Who did what, for the tests that check a component's RBAC is exactly what it uses: requests
# of ServiceAccounts (operators and workers under test), not of the control plane's own.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


def audit_log(state_dir: Path) -> Path:
    return state_dir / "logs" / "audit.log"


def apiserver_args(pki: Pki, p: Ports, state_dir: Path) -> list[str]:
    policy = state_dir / "audit-policy.json"
    policy.write_text(json.dumps(AUDIT_POLICY))
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={audit_log(state_dir)}",
        "--audit-log-format=json",
        f"--etcd-servers=http://127.0.0.1:{p.etcd}",
        "--bind-address=127.0.0.1",
        f"--secure-port={p.apiserver}",
        "--advertise-address=127.0.0.1",
        # The `kubernetes` Service cannot point at loopback; pods get the address directly.
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--token-auth-file={pki.token_file}",
        "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--allow-privileged=true",
        f"--kubelet-client-certificate={pki.kubelet_client_cert}",
        f"--kubelet-client-key={pki.kubelet_client_key}",
        f"--kubelet-certificate-authority={pki.ca_cert}",
        "--kubelet-preferred-address-types=InternalIP",
        "--profiling=false",
    ]


def controller_manager_args(state_dir: Path, pki: Pki, p: Ports) -> list[str]:
    return [
        f"--kubeconfig={state_dir / 'kube-controller-manager.kubeconfig'}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={p.controller_manager}",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.ca_cert}",
        "--use-service-account-credentials=true",
        "--cluster-name=batchpredict-local",
        "--profiling=false",
    ]


def scheduler_args(state_dir: Path, p: Ports) -> list[str]:
    return [
        f"--kubeconfig={state_dir / 'kube-scheduler.kubeconfig'}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={p.scheduler}",
        "--profiling=false",
    ]


def write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, token: str) -> None:
    """A token kubeconfig for `user`; the CA by path (the state dir holds both)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "batchpredict-local",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": "batchpredict-local",
                "context": {"cluster": "batchpredict-local", "user": user},
            }
        ],
        "current-context": "batchpredict-local",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


def default_nodes() -> list[dict[str, Any]]:
    """One plain CPU node and one GPU node (labelled and tainted like a GPU pool)."""
    return [
        {
            "name": "local-cpu-0",
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "labels": {"batchpredict.io/node-pool": "cpu"},
            "taints": [],
        },
        {
            "name": "local-gpu-0",
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "2"},
            "labels": {
                "batchpredict.io/node-pool": "gpu",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": "Local-Test-GPU",
            },
            "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        },
    ]
