"""What a program sees inside its pod: paths and API credentials.

Inside a container, pod paths are plain paths. Where containers run as processes of the host
(the project's test node agent, see tests/harness/podenv.py) each container gets a root
directory in BATCHPREDICT_CONTAINER_ROOT, and pod path `/p` is `$BATCHPREDICT_CONTAINER_ROOT/p`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubernetes_asyncio import client

CONTAINER_ROOT_ENV = "BATCHPREDICT_CONTAINER_ROOT"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TERMINATION_LOG = "/dev/termination-log"
# Where the operator mounts spec.triton.tls.secretName and spec.triton.headersSecret.
TRITON_TLS_DIR = "/var/run/batchpredict/tls"
TRITON_HEADERS_DIR = "/var/run/batchpredict/headers"


def in_pod(path: str, environ: Mapping[str, str] | None = None) -> Path:
    """Where pod path `path` is for this process."""
    root = (os.environ if environ is None else environ).get(CONTAINER_ROOT_ENV, "")
    return Path(root.rstrip("/") + path) if root else Path(path)


def listen_address() -> str:
    """Where the operator's metrics and liveness endpoints listen: the pod's IP ($POD_IP, from
    the downward API), else loopback; never every interface."""
    return os.environ.get("POD_IP") or "127.0.0.1"


def in_cluster() -> bool:
    """Running in a pod (and not pointed at a cluster by an explicit kubeconfig)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG")


def service_account_token() -> str:
    return in_pod(f"{SERVICE_ACCOUNT_DIR}/token").read_text().strip()


def service_account_ca() -> Path:
    return in_pod(f"{SERVICE_ACCOUNT_DIR}/ca.crt")


def api_server_url() -> str:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


async def api_client() -> client.ApiClient:
    """In-cluster credentials inside a pod (the ServiceAccount token), else the kubeconfig
    (KUBECONFIG or ~/.kube/config) for a program run from a workstation."""
    # Imported here: the kubernetes client costs a worker pod 0.6 s of start-up otherwise.
    from kubernetes_asyncio import client, config  # noqa: PLC0415

    if in_cluster():
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            token_filename=str(in_pod(f"{SERVICE_ACCOUNT_DIR}/token")),
            cert_filename=str(service_account_ca()),
        )
    else:
        await config.load_kube_config()
    return client.ApiClient()
