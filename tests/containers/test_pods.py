"""Pods in real containers (runc, from the image `make images` builds) on the local cluster: the
image's entry points, its user and read-only root, Pod Security "restricted", memory limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.containers.conftest import (
    IMAGE,
    finished_pod,
    label_runc,
    restricted_pod,
    terminated,
)
from tests.harness.fixtures import Cluster

pytestmark = pytest.mark.containers

PYTHON = "/opt/batchpredict/bin/python"


def logs(cluster: Cluster, pod: str, namespace: str, container: str) -> str:
    return cluster.kubectl("logs", "-n", namespace, pod, "-c", container).stdout


def test_the_image_runs_both_entry_points_as_65532_with_a_read_only_root(
    cluster: Cluster, runc_namespace: str, image: dict[str, Any]
) -> None:
    ns = runc_namespace
    who = (
        "import getpass, os, pathlib; print(os.getuid(), os.getgid(), getpass.getuser(), "
        "os.statvfs('/').f_flag & os.ST_RDONLY == os.ST_RDONLY, "
        "pathlib.Path('/proc/self/status').read_text().split('CapEff:')[1].split()[0])"
    )
    # No command for "operator": the image's own Cmd (batchpredict-operator) with args.
    cluster.apply(
        restricted_pod(
            "entry-points",
            [
                {"name": "worker", "command": ["batchpredict-worker", "--help"]},
                {"name": "operator", "args": ["batchpredict-operator", "--help"]},
                {"name": "who", "command": [PYTHON, "-c", who]},
            ],
        ),
        ns,
    )
    pod = finished_pod(cluster, "entry-points", ns)
    states = {c: terminated(pod, c) for c in ("worker", "operator", "who")}
    assert pod["status"]["phase"] == "Succeeded", states
    assert "usage: batchpredict-worker" in logs(cluster, "entry-points", ns, "worker")
    assert "usage: batchpredict-operator" in logs(cluster, "entry-points", ns, "operator")
    # uid, gid, user name (kopf looks it up), root read-only, no capabilities (drop: [ALL]).
    assert logs(cluster, "entry-points", ns, "who").split() == [
        "65532",
        "65532",
        "nonroot",
        "True",
        "0000000000000000",
    ]
    assert terminated(pod, "worker")["containerID"].startswith("runc://")
    print(f"image {image['ref']}: {image['sizeHuman']}, built in {image['buildSeconds']} s")


def test_a_pod_writing_to_its_read_only_root_fails_with_erofs(
    cluster: Cluster, runc_namespace: str
) -> None:
    ns = runc_namespace
    code = (
        "open('/tmp/ok', 'w').write('emptyDir is writable\\n'); "
        "print(open('/tmp/ok').read(), flush=True); "
        "open('/opt/batchpredict/written', 'w')"
    )
    cluster.apply(restricted_pod("writer", [{"name": "main", "command": [PYTHON, "-c", code]}]), ns)
    pod = finished_pod(cluster, "writer", ns)
    assert pod["status"]["phase"] == "Failed"
    assert terminated(pod, "main")["exitCode"] == 1
    output = logs(cluster, "writer", ns, "main")
    assert "emptyDir is writable" in output
    assert "OSError: [Errno 30] Read-only file system: '/opt/batchpredict/written'" in output


def test_a_pod_asking_for_root_is_refused_under_restricted(
    cluster: Cluster, runc_namespace: str
) -> None:
    pod = restricted_pod("root", [{"name": "main", "command": ["true"]}])
    pod["spec"]["securityContext"] = {**pod["spec"]["securityContext"], "runAsUser": 0}
    refused = cluster.kubectl(
        "apply", "-n", runc_namespace, "-f", "-", stdin=json.dumps(pod), check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr, refused.stderr
    assert "runAsUser=0" in refused.stderr, refused.stderr
    assert cluster.get("pod", "root", runc_namespace) is None


def test_the_node_refuses_root_for_a_run_as_non_root_pod(
    cluster: Cluster, namespace: str, image: dict[str, Any]
) -> None:
    """Without admission in the way, the node itself enforces runAsNonRoot (the kubelet's check)."""
    label_runc(cluster, namespace)
    pod = restricted_pod("root", [{"name": "main", "command": ["true"]}])
    pod["spec"]["securityContext"] = {"runAsNonRoot": True, "runAsUser": 0}
    cluster.apply(pod, namespace)
    found = cluster.wait_for_object(
        "pod",
        "root",
        namespace,
        lambda p: bool(p.get("status", {}).get("containerStatuses")),
        "the container's status",
    )
    waiting = found["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert "runAsNonRoot and image will run as root" in waiting["message"]
    assert found["status"]["phase"] == "Pending"


def test_a_memory_limit_is_enforced_by_an_oom_kill(cluster: Cluster, runc_namespace: str) -> None:
    ns = runc_namespace
    code = "import time; x = bytearray(512 * 2**20); time.sleep(30)"
    limits = {"limits": {"memory": "128Mi", "cpu": "500m"}}
    cluster.apply(
        restricted_pod(
            "hog", [{"name": "main", "command": [PYTHON, "-c", code], "resources": limits}]
        ),
        ns,
    )
    pod = finished_pod(cluster, "hog", ns)
    assert pod["status"]["phase"] == "Failed"
    state = terminated(pod, "main")
    assert (state["reason"], state["exitCode"]) == ("OOMKilled", 137), state


def test_an_image_that_is_not_on_the_node_is_never_pulled(
    cluster: Cluster, runc_namespace: str
) -> None:
    pod = restricted_pod("missing", [{"name": "main", "image": f"{IMAGE}-nope"}])
    cluster.apply(pod, runc_namespace)
    found = cluster.wait_for_object(
        "pod",
        "missing",
        runc_namespace,
        lambda p: bool(p.get("status", {}).get("containerStatuses")),
        "the container's status",
    )
    waiting = found["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ErrImageNeverPull", waiting
    assert f"{IMAGE}-nope" in waiting["message"]
