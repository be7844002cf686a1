"""The chart with real containers: the operator installed from the image `make images` built runs
in a container on the local node (runc), and serves runs whose plan, shard and finalize pods run
in containers from the same image, under Pod Security "restricted". The pods see only what a
real node gives them: their image, their volumes, the host's loopback network (Triton, the API
server, S3), so the data is on S3 (moto's server on loopback) and the credentials in the
run's worker env."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import s3fs
import yaml

from tests.chart.helm import CHART, Helm
from tests.chart.test_cluster import chart_crds, free_port
from tests.harness.fixtures import Cluster
from tests.harness.images import IMAGE, image, label_runc
from tests.harness.objectstore import BUCKET, s3
from tests.harness.triton_server import TritonHandle

__all__ = ["chart_crds", "image", "s3"]
pytestmark = [pytest.mark.chart, pytest.mark.containers]


@pytest.fixture
def contained_release(
    chart_crds: Cluster, helm: Helm, namespace: str, image: dict[str, Any], tmp_path: Path
) -> Iterator[str]:
    """The chart installed from the image, in a namespace of containers under "restricted"."""
    label_runc(
        chart_crds,
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    name = f"bp-{uuid.uuid4().hex[:6]}"
    repository, tag = IMAGE.rsplit(":", 1)
    values = {
        "watchNamespaces": [namespace],
        "statusIntervalSeconds": 1,
        # The image is on the node only: never pulled.
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        # Pods share the host's network: free ports, not 8080/8081.
        "metrics": {"port": free_port()},
        "operator": {"livenessPort": free_port()},
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm.run(
        "install",
        name,
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        str(values_file),
        "--wait",
        "--timeout",
        "180s",
        env=chart_crds.env(),
    )
    yield name
    helm.run("uninstall", name, "--namespace", namespace, check=False, env=chart_crds.env())


def _run(
    name: str,
    triton: TritonHandle,
    env: dict[str, str],
    prefix: str,
    worker: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "batchpredict.io/v1alpha1",
        "kind": "BatchPrediction",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "double"},
            "triton": {"url": triton.grpc_url},
            "input": {
                "uri": f"s3://{BUCKET}/{prefix}/items.jsonl",
                "format": "jsonl",
                "idField": "id",
            },
            "output": {"uri": f"s3://{BUCKET}/{prefix}/{name}"},
            "shards": 2,
            "parallelism": 2,
            "worker": {"env": [{"name": k, "value": v} for k, v in env.items()], **(worker or {})},
            **spec,
        },
    }


def _finished(cluster: Cluster, name: str, namespace: str, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        found = cluster.get("batchpredictions.batchpredict.io", name, namespace) or {}
        status = found.get("status") or {}
        if status.get("phase") in {"Succeeded", "Failed", "PartiallySucceeded"}:
            return status
        time.sleep(1)
    pods = cluster.kubectl("get", "pods,jobs", "-n", namespace, "-o", "wide", check=False)
    raise AssertionError(f"{name} did not finish: {json.dumps(status)}\n{pods.stdout}")


def _container_ids(cluster: Cluster, namespace: str) -> dict[str, list[str]]:
    pods = cluster.get("pods", namespace=namespace)["items"]
    return {
        p["metadata"]["name"]: [
            s.get("containerID", "") for s in p.get("status", {}).get("containerStatuses") or []
        ]
        for p in pods
    }


def test_the_chart_serves_runs_in_containers_from_the_image(
    chart_crds: Cluster,
    namespace: str,
    contained_release: str,
    triton_server: TritonHandle,
    s3: tuple[s3fs.S3FileSystem, dict[str, str]],
) -> None:
    cluster = chart_crds
    fs, env = s3
    items = "".join(json.dumps({"id": f"item-{n}", "x": n}) + "\n" for n in range(200))
    fs.pipe_file(f"{BUCKET}/{namespace}/items.jsonl", items.encode())

    cluster.apply(_run("first", triton_server, env, namespace), namespace)
    status = _finished(cluster, "first", namespace)
    assert status["phase"] == "Succeeded", status
    assert (status["items"]["succeeded"], status["items"]["failed"]) == (200, 0)
    predicted = [
        json.loads(line)["id"]
        for key in fs.find(f"{BUCKET}/{namespace}/first")
        if key.rsplit("/", 1)[-1].startswith("predictions-")
        for line in fs.cat_file(key).decode().splitlines()
        if line.strip()
    ]
    assert sorted(predicted) == sorted(f"item-{n}" for n in range(200))
    # Every pod (the operator, plan, shards, finalize) ran in a container from the image.
    ids = _container_ids(cluster, namespace)
    roles = {"plan", "r0", "finalize", contained_release}
    assert all(any(role in pod for pod in ids) for role in roles), ids
    assert all(i.startswith("runc://") for pod_ids in ids.values() for i in pod_ids), ids


# The second case once ended "Succeeded" with all 16 items pending (shards whose pods died in a
# retry round were counted nowhere); every round now accounts for every item it was given.
RETRIES = [
    pytest.param({"maxRounds": 0, "shardBackoffLimit": 0}, id="no-retry-round"),
    pytest.param(
        {"maxRounds": 1, "shardBackoffLimit": 0, "backoff": {"initialSeconds": 1}},
        id="a-retry-round",
    ),
]


@pytest.mark.parametrize("retry", RETRIES)
def test_an_oom_killed_worker_is_a_pod_failure_not_an_item_failure(
    chart_crds: Cluster,
    namespace: str,
    contained_release: str,
    triton_server: TritonHandle,
    s3: tuple[s3fs.S3FileSystem, dict[str, str]],
    retry: dict[str, Any],
) -> None:
    cluster = chart_crds
    fs, env = s3
    # 16 items of 4 MB each: a shard holds 32 MB of rows and more once parsed, over its 64 MiB
    # limit (only anonymous memory counts: the libraries' pages are shared page cache).
    pad = "x" * (4 * 2**20)
    items = "".join(json.dumps({"id": f"item-{n}", "x": n, "pad": pad}) + "\n" for n in range(16))
    fs.pipe_file(f"{BUCKET}/{namespace}/items.jsonl", items.encode())
    worker = {"resources": {"limits": {"memory": "64Mi"}}}
    run = _run("starved", triton_server, env, namespace, worker=worker, retry=retry)
    cluster.apply(run, namespace)
    status = _finished(cluster, "starved", namespace, timeout=300)
    print(json.dumps({k: status.get(k) for k in ("phase", "message", "items", "failureSummary")}))
    pods = cluster.get("pods", namespace=namespace)["items"]
    ended = {
        p["metadata"]["name"]: s["state"]["terminated"]
        for p in pods
        for s in p.get("status", {}).get("containerStatuses") or []
        if "terminated" in s["state"]
        and p["metadata"]["labels"].get("batchpredict.io/role") == "shards"
    }
    # Every shard pod was OOM-killed, as the kubelet reports it.
    assert ended, pods
    assert all((t["reason"], t["exitCode"]) == ("OOMKilled", 137) for t in ended.values()), ended
    # The run failed, for its shards (pods): no item failed on its own (no model or item
    # error), none succeeded; every item is recorded as never processed, and nothing is pending.
    assert status["phase"] == "Failed", status
    assert status["items"]["succeeded"] == 0, status
    assert (status["items"]["pending"], status["items"]["retrying"]) == (0, 0), status
    assert [f["code"] for f in status.get("failureSummary") or []] == ["NOT_PROCESSED"], status
    assert {i["code"] for i in status.get("failedItems") or []} == {"NOT_PROCESSED"}, status
