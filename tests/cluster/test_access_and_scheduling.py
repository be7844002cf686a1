"""RBAC on ServiceAccount tokens, in-cluster clients, and GPU scheduling onto the GPU pool."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from tests.cluster.manifests import condition, container, pod, pod_finished
from tests.harness.fixtures import Cluster

# An in-cluster client in a few lines: token and CA from the projected service-account volume,
# the API server from KUBERNETES_SERVICE_HOST/PORT (the node agent exports the local paths
# under BATCHPREDICT_CONTAINER_ROOT; on a real node that variable is unset and "/" is right).
IN_CLUSTER = """
import json, os, ssl, urllib.error, urllib.request
root = os.environ.get('BATCHPREDICT_CONTAINER_ROOT', '/')
sa = os.path.join(root, 'var/run/secrets/kubernetes.io/serviceaccount')
ns = open(sa + '/namespace').read()
ctx = ssl.create_default_context(cafile=sa + '/ca.crt')
host, port = os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT']
base = 'https://%s:%s' % (host, port)
for what in ('pods', 'secrets'):
    req = urllib.request.Request(base + '/api/v1/namespaces/%s/%s' % (ns, what),
                                 headers={'Authorization': 'Bearer ' + open(sa + '/token').read()})
    try:
        urllib.request.urlopen(req, context=ctx)
        print(what, 200)
    except urllib.error.HTTPError as err:
        print(what, err.code)
"""


def pod_reader_rbac(namespace: str) -> list[dict[str, Any]]:
    meta = {"name": "reader", "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    ]


def test_service_account_token_is_refused_what_rbac_does_not_grant(
    cluster: Cluster, namespace: str
) -> None:
    for obj in pod_reader_rbac(namespace):
        cluster.apply(obj)
    token = cluster.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()

    def as_reader(*args: str) -> Any:
        return cluster.kubectl(*args, "-n", namespace, "--token", token, check=False)

    allowed = as_reader("get", "pods")
    denied = as_reader("get", "secrets")
    create = as_reader("create", "configmap", "x", "--from-literal=a=b")

    assert allowed.returncode == 0, allowed.stderr
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert f'User "system:serviceaccount:{namespace}:reader" cannot list' in denied.stderr
    assert create.returncode != 0
    assert 'cannot create resource "configmaps"' in create.stderr


def test_pod_uses_its_service_account_in_cluster(cluster: Cluster, namespace: str) -> None:
    for obj in pod_reader_rbac(namespace):
        cluster.apply(obj)
    spec = {
        "serviceAccountName": "reader",
        "restartPolicy": "Never",
        "containers": [container("main", IN_CLUSTER)],
    }
    cluster.apply(pod("client", spec), namespace)

    done = cluster.wait_for_object("pod", "client", namespace, pod_finished, "finished")

    logs = cluster.kubectl("logs", "-n", namespace, "client").stdout
    assert done["status"]["phase"] == "Succeeded", logs
    assert logs.split("\n")[:2] == ["pods 200", "secrets 403"]


def gpu_nodes(cluster: Cluster) -> set[str]:
    nodes = cluster.get("nodes")["items"]
    return {
        n["metadata"]["name"]
        for n in nodes
        if int(n["status"].get("allocatable", {}).get("nvidia.com/gpu", "0")) > 0
    }


def test_gpu_request_lands_only_on_the_gpu_node(cluster: Cluster, namespace: str) -> None:
    gpus = gpu_nodes(cluster)
    if not gpus:
        pytest.skip("no node of this cluster has allocatable nvidia.com/gpu")
    sleep = "import time; time.sleep(300)"
    gpu = {"resources": {"limits": {"nvidia.com/gpu": "1"}}}
    toleration = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    cluster.apply(
        pod("gpu", {"tolerations": toleration, "containers": [container("main", sleep, **gpu)]}),
        namespace,
    )
    cluster.apply(pod("untolerated", {"containers": [container("main", sleep, **gpu)]}), namespace)
    for i in range(3):
        cluster.apply(pod(f"plain-{i}", {"containers": [container("main", sleep)]}), namespace)

    def scheduled(name: str) -> str:
        return str(cluster.get("pod", name, namespace)["spec"].get("nodeName", ""))

    gpu_node = cluster.wait_for(lambda: scheduled("gpu"), "the GPU pod to be scheduled")
    plain_nodes = {
        cluster.wait_for(functools.partial(scheduled, name), f"{name} to be scheduled")
        for name in ("plain-0", "plain-1", "plain-2")
    }
    untolerated = cluster.wait_for_object(
        "pod", "untolerated", namespace, lambda p: bool(condition(p, "PodScheduled")), "verdict"
    )
    unschedulable = condition(untolerated, "PodScheduled")

    assert gpu_node in gpus
    assert not plain_nodes & gpus  # the GPU pool's taint keeps other pods off it
    assert unschedulable["status"] == "False"
    assert unschedulable["reason"] == "Unschedulable"
    if cluster.local:
        assert "untolerated taint" in unschedulable["message"]
    running = cluster.wait_for_object(
        "pod", "gpu", namespace, lambda p: p["status"].get("phase") == "Running", "running"
    )
    assert running["status"]["containerStatuses"][0]["ready"] is True
    assert "running" in running["status"]["containerStatuses"][0]["state"]
