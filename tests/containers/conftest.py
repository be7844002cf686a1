"""Fixtures of the container tier: the image (`make images`, cached by content) and namespaces
whose pods the local node agent runs in containers with runc (tests.harness.runc).

The tier needs the local cluster (on a cluster given by KUBECONFIG, e.g. kind, the image would
have to be loaded into its nodes: `make kind-e2e` does that) and root, as the node agent does.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness.fixtures import Cluster
from tests.harness.images import IMAGE, image, label_runc, prebuild

__all__ = ["IMAGE", "image", "label_runc"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    prebuild(config, items)


@pytest.fixture
def runc_namespace(cluster: Cluster, namespace: str, image: dict[str, Any]) -> str:
    """A namespace whose pods run in containers and must meet Pod Security "restricted"."""
    label_runc(
        cluster,
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    return namespace


RESTRICTED_POD: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def restricted_pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A pod of the image's containers that meets "restricted", /tmp an emptyDir."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "securityContext": RESTRICTED_POD,
            "volumes": [{"name": "tmp", "emptyDir": {}}],
            "containers": [
                {
                    "image": IMAGE,
                    "securityContext": RESTRICTED_CONTAINER,
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    **c,
                }
                for c in containers
            ],
            **spec,
        },
    }


def finished_pod(cluster: Cluster, name: str, namespace: str, timeout: float = 120) -> Any:
    return cluster.wait_for_object(
        "pod",
        name,
        namespace,
        lambda p: p.get("status", {}).get("phase") in ("Succeeded", "Failed"),
        "the pod to finish",
        timeout=timeout,
    )


def terminated(pod: dict[str, Any], container: str) -> dict[str, Any]:
    (status,) = [s for s in pod["status"]["containerStatuses"] if s["name"] == container]
    return dict(status["state"]["terminated"])
