"""The harness's retry of API server refusals (tests/harness/served.py), over scripted kubectl
answers; the real API server restarted is in tests/cluster/test_api_server_restart.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness.served import (
    NotServedError,
    ServedResource,
    crd_resources,
    kubectl_retrying,
    read_manifests,
)

REPO = Path(__file__).resolve().parents[2]
MAP_503 = (
    'Error from server (ServiceUnavailable): error when creating "STDIN": Resource kind '
    "batchpredict.io/v1alpha1, Kind=BatchPrediction not found. There can be a delay between "
    "when CustomResourceDefinitions are created and when they are available."
)
REFUSED = "The connection to the server 127.0.0.1:6443 was refused - did you specify the right host"


class Script:
    """A kubectl that answers (returncode, stderr) from a list, then succeeds."""

    def __init__(self, *answers: tuple[int, str]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        self.calls += 1
        code, err = self.answers.pop(0) if self.answers else (0, "")
        return subprocess.CompletedProcess(list(args), code, "", err)


def test_refusals_are_retried_until_the_request_goes_through() -> None:
    kubectl = Script((1, MAP_503), (1, REFUSED), (1, "Error from server (TooManyRequests): x"))
    result = kubectl_retrying(kubectl, "create", "-f", "-", what="bp/x", timeout=10)
    assert result.returncode == 0
    assert kubectl.calls == 4


def test_other_errors_come_back_at_once() -> None:
    kubectl = Script((1, "Error from server (Invalid): spec.parallelism: Invalid value: -1"))
    result = kubectl_retrying(kubectl, "create", "-f", "-", what="bp/x")
    assert result.returncode == 1
    assert "Invalid value" in result.stderr
    assert kubectl.calls == 1


def test_refusals_past_the_deadline_name_the_resource() -> None:
    kubectl = Script(*[(1, MAP_503)] * 50)
    with pytest.raises(NotServedError, match=r"BatchPrediction demo/digits: .* refused it after"):
        kubectl_retrying(kubectl, "apply", what="BatchPrediction demo/digits", timeout=1)
    assert 2 <= kubectl.calls < 10


def test_the_served_resources_of_the_chart_crds() -> None:
    resources = crd_resources(read_manifests(REPO / "charts" / "batchpredict" / "crds"))
    assert (
        ServedResource("batchpredict.io", "v1alpha1", "batchpredictions", "BatchPrediction")
        in resources
    )
    assert (
        ServedResource(
            "batchpredict.io", "v1alpha1", "batchpredictionshards", "BatchPredictionShard"
        )
        in resources
    )
    assert {r.group for r in resources} == {"batchpredict.io", "kopf.dev"}
    assert {r.kind for r in resources if not r.namespaced} == {"ClusterKopfPeering"}
