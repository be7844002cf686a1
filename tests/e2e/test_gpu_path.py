"""The GPU path on the local cluster: a run whose pods each start their own Triton as a native
sidecar on the GPU pool, serving a model from a volume; and node pools that fail loudly.

The node agent runs the sidecar container (NVIDIA's Triton image, command `tritonserver`) as the
nvidia-pytriton wheel's real `tritonserver` (tests.harness.triton_standin); the model repository
is a ConfigMap volume mounted read-only where the sidecar's modelRepository says.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import (
    OperatorProcess,
    assert_run_truth,
    batch_prediction,
    free_port,
    get_bp,
    pods_of,
    wait_for_phase,
    write_items,
)
from tests.harness.fixtures import Cluster
from tests.harness.triton_server import MODELS_DIR

TERMINAL = {"Succeeded", "PartiallySucceeded", "Failed"}
GPU_POOL: dict[str, Any] = {
    "description": "the local GPU node",
    "nodeSelector": {"batchpredict.io/node-pool": "gpu"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "resources": {"limits": {"nvidia.com/gpu": 1}},
}
POOLS: dict[str, Any] = {
    "gpu": GPU_POOL,
    "cpu": {"nodeSelector": {"batchpredict.io/node-pool": "cpu"}},
}
POOLS_NAMESPACE = "batchpredict-pools-e2e"
POOLS_CONFIG_MAP = "batchpredict-node-pools"


@dataclass(frozen=True)
class NoServer:
    """A sidecar run has no Triton address of its own: each pod starts its own."""

    grpc_url: str = "unused:1"


@pytest.fixture(scope="module")
def gpu_operator(operator_process: OperatorProcess, cluster: Cluster) -> Iterator[OperatorProcess]:
    """The operator with node pools (as the chart's nodePools), and the pools' ConfigMap as the
    chart renders it for users."""
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": POOLS_NAMESPACE}})
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": POOLS_CONFIG_MAP,
                "namespace": POOLS_NAMESPACE,
                "labels": {"batchpredict.io/node-pools": "true"},
            },
            "data": {"pools.yaml": yaml.safe_dump(POOLS)},
        }
    )
    operator_process.reconfigure(
        nodePools=POOLS, nodePoolsConfigMap=f"{POOLS_NAMESPACE}/{POOLS_CONFIG_MAP}"
    )
    yield operator_process
    operator_process.reconfigure()
    cluster.kubectl("delete", "namespace", POOLS_NAMESPACE, "--wait=false", check=False)


def model_config_map(namespace: str) -> dict[str, Any]:
    """The `double` test model (y = 2x, Python backend) as a ConfigMap."""
    model = MODELS_DIR / "double"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "triton-models", "namespace": namespace},
        "data": {
            "config.pbtxt": (model / "config.pbtxt").read_text(),
            "model.py": (model / "1" / "model.py").read_text(),
        },
    }


# The ConfigMap laid out as a Triton model repository: <model>/config.pbtxt, <model>/1/model.py.
MODEL_VOLUME = {
    "name": "model-repository",
    "configMap": {
        "name": "triton-models",
        "items": [
            {"key": "config.pbtxt", "path": "double/config.pbtxt"},
            {"key": "model.py", "path": "double/1/model.py"},
        ],
    },
}


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_triton_sidecar_run_on_the_gpu_pool(
    gpu_operator: OperatorProcess, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    dataset = write_items(tmp_path / "items.jsonl", [float(n) for n in range(600)])
    output = tmp_path / "out"
    cluster.apply(model_config_map(namespace))
    # Pods share the host's network here: free ports, so nothing else on this machine collides.
    http, grpc, metrics = free_port(), free_port(), free_port()
    sidecar = {
        "image": "nvcr.io/nvidia/tritonserver:25.10-py3",
        "modelRepository": "/models",
        "modelVolume": "model-repository",
        "httpPort": http,
        "grpcPort": grpc,
        "metricsPort": metrics,
    }
    bp = batch_prediction(
        "sidecar",
        NoServer(),
        dataset,
        output,
        worker={"nodePool": "gpu", "volumes": [MODEL_VOLUME]},
        parallelism=1,  # one pod at a time: each one's Triton takes the same ports
        shards=2,
        batching={"batchSize": 16, "concurrency": 2},
    )
    bp["spec"]["triton"] = {"sidecar": sidecar}
    cluster.apply(bp, namespace)
    body = wait_for_phase(
        cluster,
        name="sidecar",
        namespace=namespace,
        phases=TERMINAL,
        timeout=300,
        operator=gpu_operator,
    )
    status = body["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["ModelReady"] == "True"
    predictions = [
        json.loads(line)
        for path in sorted((output / "rounds").rglob("predictions-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert sorted(p["y"][0] if isinstance(p["y"], list) else p["y"] for p in predictions) == [
        2.0 * n for n in range(600)
    ], "every item predicted by the sidecar's model (y = 2x)"

    with_triton = [p for p in pods_of(cluster, namespace) if p["spec"].get("initContainers")]
    roles = sorted(p["metadata"]["labels"]["batchpredict.io/role"] for p in with_triton)
    assert roles == ["plan", "shards", "shards"], "plan and shard pods run Triton; finalize not"
    for pod in with_triton:
        name = pod["metadata"]["name"]
        # Scheduled on the GPU pool: its node, its taint tolerated, a GPU for Triton.
        assert pod["spec"]["nodeName"] == "local-gpu-0", name
        (triton,) = pod["spec"]["initContainers"]
        assert triton["restartPolicy"] == "Always"
        assert triton["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        assert triton["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"name": "model-repository", "mountPath": "/models", "readOnly": True} in triton[
            "volumeMounts"
        ]
        # The sidecar stopped when the worker ended, and the pod succeeded.
        assert pod["status"]["phase"] == "Succeeded", name
        (state,) = pod["status"]["initContainerStatuses"]
        assert "terminated" in state["state"], (name, state)
        log = cluster.kubectl("logs", "-n", namespace, name, "-c", "triton").stdout
        assert "successfully loaded 'double'" in log, log[-2000:]
    assert not listening(http) and not listening(grpc), "no Triton is left running"
    assert_run_truth(cluster, "sidecar", namespace, output, 600)


def test_an_unknown_node_pool_fails_at_once_with_the_known_pools(
    gpu_operator: OperatorProcess, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    dataset = write_items(tmp_path / "items.jsonl", [1.0, 2.0])
    output = tmp_path / "out"
    bp = batch_prediction("typo", NoServer(), dataset, output, worker={"nodePool": "gpu-a100"})
    cluster.apply(bp, namespace)
    status = wait_for_phase(
        cluster, name="typo", namespace=namespace, phases=TERMINAL, operator=gpu_operator
    )["status"]
    assert status["phase"] == "Failed"
    assert status["message"] == (
        "spec.worker.nodePool: 'gpu-a100' is not a node pool of this operator (known pools: "
        "cpu, gpu; they come from the operator's Helm values `nodePools`; listed in ConfigMap "
        f"{POOLS_NAMESPACE}/{POOLS_CONFIG_MAP})"
    )
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "UnknownNodePool")
    assert cluster.get("jobs", namespace=namespace)["items"] == [], "nothing may be created"
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=typo"
    ).stdout
    assert "not a node pool of this operator" in events
    assert get_bp(cluster, "typo", namespace)["status"]["completionTime"]
    assert not output.exists(), "no pod ran"

    # Where the pools come from, as a user finds out.
    explain = " ".join(cluster.kubectl("explain", "bp.spec.worker.nodePool").stdout.split())
    assert "UnknownNodePool" in explain and "batchpredict node-pools" in explain
    listing = subprocess.run(
        [
            str(Path(sys.executable).parent / "batchpredict"),
            "node-pools",
            "-n",
            POOLS_NAMESPACE,
        ],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert listing[0].split() == ["NAME", "GPU", "NODE", "SELECTOR", "DESCRIPTION"]
    assert listing[1].split() == ["cpu", "-", "batchpredict.io/node-pool=cpu"]
    assert listing[2].split() == [
        "gpu",
        "1",
        "nvidia.com/gpu",
        "batchpredict.io/node-pool=gpu",
        "the",
        "local",
        "GPU",
        "node",
    ]


def test_a_sidecar_naming_a_missing_volume_fails_naming_the_field(
    gpu_operator: OperatorProcess, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """What the API server cannot check (worker.volumes are opaque to it) the operator does."""
    dataset = write_items(tmp_path / "items.jsonl", [1.0])
    bp = batch_prediction("no-volume", NoServer(), dataset, tmp_path / "out")
    bp["spec"]["triton"] = {
        "sidecar": {
            "image": "nvcr.io/nvidia/tritonserver:25.10-py3",
            "modelRepository": "/models",
            "modelVolume": "modles",
        }
    }
    bp["spec"]["worker"] = {"volumes": [MODEL_VOLUME]}
    cluster.apply(bp, namespace)
    status = wait_for_phase(
        cluster, name="no-volume", namespace=namespace, phases=TERMINAL, operator=gpu_operator
    )["status"]
    assert status["phase"] == "Failed"
    assert (
        "triton.sidecar.modelVolume: no volume named 'modles' in worker.volumes "
        "(volumes: model-repository); add it there" in status["message"]
    ), status["message"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert cluster.get("jobs", namespace=namespace)["items"] == []
