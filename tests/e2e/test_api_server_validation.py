"""The generated CRD on a real API server: accepted, validating, explained."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.harness.fixtures import Cluster
from tests.harness.served import kubectl_retrying

VALID: dict[str, Any] = {
    "apiVersion": "batchpredict.io/v1alpha1",
    "kind": "BatchPrediction",
    "metadata": {"name": "check"},
    "spec": {
        "model": {"name": "echo"},
        "triton": {"url": "triton:8001"},
        "input": {"uri": "/data/in.jsonl", "format": "jsonl"},
        "output": {"uri": "/data/out/"},
        "suspend": True,  # nothing runs: these tests are about admission only
    },
}


def create(cluster: Cluster, body: dict[str, Any], namespace: str) -> str:
    """kubectl create's error, "" when it succeeded (past the API server's 503s of a start)."""
    result = kubectl_retrying(
        cluster.kubectl, "create", "-n", namespace, "-f", "-",
        stdin=json.dumps(body), what="BatchPrediction check",
    )  # fmt: skip
    return result.stderr if result.returncode else ""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"batching": {"batchSize": 0}}, "spec.batching.batchSize: Invalid value: 0"),
        ({"input": {"uri": "/x", "format": "xml"}}, 'spec.input.format: Unsupported value: "xml"'),
        (
            {"triton": {"url": "t:1", "sidecar": {"image": "i", "modelRepository": "s3://b/m"}}},
            "set exactly one of triton.url (an existing server) and triton.sidecar",
        ),
        ({"shards": 4, "itemsPerShard": 10}, "set at most one of itemsPerShard and shards"),
        (
            {"triton": {"sidecar": {"image": "i", "modelRepository": "/models"}}},
            "spec.triton.sidecar: Invalid value: triton.sidecar.modelVolume names "
            "the volume (of worker.volumes) that holds modelRepository when it is a path",
        ),
        (
            {
                "triton": {
                    "sidecar": {"image": "i", "modelRepository": "gs://b/m", "grpcPort": 8000}
                }
            },
            "triton.sidecar.httpPort, grpcPort and metricsPort must differ",
        ),
        (
            {"triton": {"sidecar": {"image": "i", "modelRepository": "models"}}},
            "spec.triton.sidecar.modelRepository: Invalid value",
        ),
        ({"parallelism": -1}, "spec.parallelism: Invalid value: -1"),
        (
            {"evaluation": {"task": "classification", "prediction": "p", "threshold": 0.3}},
            "evaluation.threshold applies to binary and multilabel tasks only",
        ),
        (
            {"evaluation": {"task": "ranking", "prediction": "p"}},
            'spec.evaluation.task: Unsupported value: "ranking"',
        ),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(
    installed_crds: Cluster, namespace: str, change: dict[str, Any], expected: str
) -> None:
    body = copy.deepcopy(VALID)
    body["spec"].update(change)
    error = create(installed_crds, body, namespace)
    assert expected in error, error


def test_defaults_are_applied_by_the_api_server(installed_crds: Cluster, namespace: str) -> None:
    assert create(installed_crds, VALID, namespace) == ""
    stored = installed_crds.get("bp", "check", namespace)
    assert stored["spec"]["parallelism"] == 4
    assert stored["spec"]["retry"]["backoff"]["initialSeconds"] == 30
    assert stored["spec"]["output"]["format"] == "jsonl"


def test_model_input_output_cannot_change_after_creation(
    installed_crds: Cluster, namespace: str
) -> None:
    assert create(installed_crds, VALID, namespace) == ""
    result = installed_crds.kubectl(
        "patch",
        "bp",
        "check",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"model": {"name": "other"}}}),
        check=False,
    )
    assert result.returncode != 0
    assert "spec.model cannot change once the run started" in result.stderr
    allowed = installed_crds.kubectl(
        "patch",
        "bp",
        "check",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"parallelism": 7}}),
        check=False,
    )
    assert allowed.returncode == 0, allowed.stderr


def test_kubectl_explain_prints_the_descriptions(installed_crds: Cluster) -> None:
    out = installed_crds.kubectl("explain", "bp.spec").stdout
    assert "score `input` with `model` on `triton`" in out
    assert "itemsPerShard" in out
    deeper = installed_crds.kubectl("explain", "bp.spec.triton.url").stdout
    assert "Address of an existing Triton server" in deeper


def test_short_name_and_category(installed_crds: Cluster, namespace: str) -> None:
    assert create(installed_crds, VALID, namespace) == ""
    by_category = installed_crds.kubectl("get", "batchpredict", "-n", namespace).stdout
    assert "check" in by_category
    header = installed_crds.kubectl("get", "bp", "-n", namespace).stdout.splitlines()[0]
    for column in ("MODEL", "PHASE", "PROGRESS", "SUCCEEDED", "FAILED", "STARTED BY", "AGE"):
        assert column in header
