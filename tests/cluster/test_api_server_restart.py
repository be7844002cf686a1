"""An API server restarted over its kept etcd state, where the CRDs are already `Established`,
takes a BatchPrediction created right away, every time: what `make demo` meets on a cluster it
(re)starts. The create goes through the started-by MutatingAdmissionPolicy, which answers 503
until it has loaded the CRD's schema again; the harness waits until the resource is served
and retries that 503 (tests/harness/served.py)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import REPO, LocalCluster
from tests.harness.fixtures import Cluster, kubectl_binary
from tests.harness.served import install_crds, kubectl_retrying

pytestmark = pytest.mark.cluster

# Bounded: at least MIN_RESTARTS, then more until BUDGET_S is spent, at most MAX_RESTARTS.
MIN_RESTARTS, MAX_RESTARTS, BUDGET_S = 3, 8, 40.0


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[tuple[LocalCluster, Cluster]]:
    """A local cluster of this test's own: restarting the session's API server would pull it
    from under the other tests."""
    if os.environ.get("KUBECONFIG"):
        pytest.skip("restarts the API server of a local cluster it starts itself")
    local = LocalCluster(tmp_path / "cluster")
    try:
        kubeconfig = local.up()
        yield local, Cluster(kubeconfig, kubectl_binary(), local.state_dir)
    finally:
        local.down(purge=True)


def batch_prediction(name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "batchpredict.io/v1alpha1",
            "kind": "BatchPrediction",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "model": {"name": "m"},
                "triton": {"url": "triton:8001"},
                "input": {"uri": "/data/in.jsonl", "format": "jsonl"},
                "output": {"uri": "/data/out/"},
                "suspend": True,  # no operator here: this is about the API server only
            },
        }
    )


def test_a_batch_prediction_is_created_right_after_each_api_server_restart(
    own_cluster: tuple[LocalCluster, Cluster],
) -> None:
    local, cluster = own_cluster
    install_crds(cluster.kubectl, REPO / "crds")
    cluster.kubectl("apply", "-f", str(REPO / "deploy" / "started-by-policy.yaml"))

    started = time.monotonic()
    created: list[str] = []
    for n in range(MAX_RESTARTS):
        if n >= MIN_RESTARTS and time.monotonic() - started > BUDGET_S:
            break
        local.restart_apiserver()
        # As `make demo` does on a cluster it has just started: CRDs applied and served, then
        # the run created.
        install_crds(cluster.kubectl, REPO / "crds")
        name = f"after-restart-{n}"
        result = kubectl_retrying(
            cluster.kubectl, "create", "-f", "-", stdin=batch_prediction(name), what=name
        )
        assert result.returncode == 0, f"restart {n}: {result.stderr}"
        created.append(name)

    assert len(created) >= MIN_RESTARTS
    stored = cluster.get("bp", namespace="default")["items"]
    assert sorted(bp["metadata"]["name"] for bp in stored) == sorted(created)
    # Each went through the started-by policy (the admission step that answers 503 while the
    # restarted server has not loaded the CRD's schema), not around it.
    for bp in stored:
        assert bp["metadata"]["annotations"]["batchpredict.io/started-by"] == "admin"
