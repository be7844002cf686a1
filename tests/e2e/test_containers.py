"""A run end to end with its pods in containers: the operator (a subprocess, as in the rest of
this tier) creates plan, shard and finalize Jobs whose pods the local node agent runs with runc
from the image `make images` built, under Pod Security "restricted". The pods see their image
and volumes only, so the dataset and the output are on S3 (moto's server on loopback); the run
ends with the tier's shared check on its output (copied back), status and manifest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import s3fs

from tests.e2e.conftest import OperatorProcess, assert_run_truth, wait_for_phase
from tests.harness.fixtures import Cluster
from tests.harness.images import image, label_runc
from tests.harness.objectstore import BUCKET, download, s3
from tests.harness.triton_server import TritonHandle

__all__ = ["image", "s3"]
pytestmark = pytest.mark.containers
ITEMS = 300


@pytest.fixture
def contained_operator(
    operator_process: OperatorProcess, image: dict[str, Any]
) -> Iterator[OperatorProcess]:
    """The tier's operator with the image's worker command (not this virtualenv's path),
    restored afterwards. Process-mode pods find the same name first on their PATH."""
    operator_process.reconfigure(workerCommand=["batchpredict-worker"])
    yield operator_process
    operator_process.reconfigure()


def test_a_run_in_containers_accounts_for_every_item(
    contained_operator: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    s3: tuple[s3fs.S3FileSystem, dict[str, str]],
    tmp_path: Path,
) -> None:
    label_runc(
        cluster,
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    fs, env = s3
    # The model `reject` refuses negative inputs: three items fail alone, the rest succeed.
    values = [-1 if n in {7, 123, 250} else n for n in range(ITEMS)]
    rows = "".join(json.dumps({"id": f"item-{n}", "x": x}) + "\n" for n, x in enumerate(values))
    fs.pipe_file(f"{BUCKET}/{namespace}/items.jsonl", rows.encode())
    bp = {
        "apiVersion": "batchpredict.io/v1alpha1",
        "kind": "BatchPrediction",
        "metadata": {"name": "boxed"},
        "spec": {
            "model": {"name": "reject"},
            "triton": {"url": triton_server.grpc_url},
            "input": {
                "uri": f"s3://{BUCKET}/{namespace}/items.jsonl",
                "format": "jsonl",
                "idField": "id",
            },
            "output": {"uri": f"s3://{BUCKET}/{namespace}/out"},
            "shards": 3,
            "parallelism": 3,
            "worker": {"env": [{"name": k, "value": v} for k, v in env.items()]},
        },
    }
    cluster.apply(bp, namespace)
    body = wait_for_phase(
        cluster,
        name="boxed",
        namespace=namespace,
        phases={"Succeeded", "PartiallySucceeded", "Failed"},
        timeout=300,
        operator=contained_operator,
    )
    output = download(fs, f"{BUCKET}/{namespace}/out", tmp_path / "out")
    status = assert_run_truth(cluster, "boxed", namespace, output, ITEMS)
    assert body["status"]["phase"] == "PartiallySucceeded", body["status"]
    assert (status["items"]["succeeded"], status["items"]["failed"]) == (ITEMS - 3, 3)
    assert sorted(i["id"] for i in status["failedItems"]) == ["item-123", "item-250", "item-7"]

    # Every pod of the run (plan, shards, finalize) ran in a container from the image.
    pods = cluster.get("pods", namespace=namespace)["items"]
    roles = {p["metadata"]["labels"].get("batchpredict.io/role") for p in pods}
    assert roles == {"plan", "shards", "finalize"}, roles
    ids = [
        s.get("containerID", "")
        for p in pods
        for s in p.get("status", {}).get("containerStatuses") or []
    ]
    assert ids and all(i.startswith("runc://") for i in ids), ids
