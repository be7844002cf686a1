"""Fault injection for the e2e fault suite: a Triton of a test's own that can be stopped and
started again on the same ports, an API server restart, reports refused by admission."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.harness import procs
from tests.harness.cluster import LocalCluster, cache_bin_dir
from tests.harness.components import apiserver_args
from tests.harness.fixtures import Cluster


def local_cluster(cluster: Cluster) -> LocalCluster:
    if cluster.state_dir is None:
        pytest.skip("restarts the local control plane's API server (not a KUBECONFIG cluster)")
    return LocalCluster(cluster.state_dir)


def restart_apiserver(cluster: Cluster, down_seconds: float = 3.0) -> None:
    """Stop kube-apiserver (SIGTERM, as a rolling control-plane update does), keep it down for
    `down_seconds`, start it again with the same flags and wait until it is ready."""
    local = local_cluster(cluster)
    pid = procs.pid_from_file(local.state_dir / "pids" / "kube-apiserver.pid")
    assert pid is not None, "no kube-apiserver pid file"
    procs.stop([pid])
    time.sleep(down_seconds)
    argv = [str(cache_bin_dir() / "kube-apiserver"), *apiserver_args(local.pki, local.ports())]
    procs.spawn("kube-apiserver", argv, local.state_dir)

    def ready() -> bool:
        try:
            return bool(local.api_get("/readyz") == "ok")
        except Exception:  # noqa: BLE001 (not up yet)
            return False

    cluster.wait_for(ready, "kube-apiserver ready again", timeout=90)


def refuse_reports(namespace: str) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy and binding that refuse every BatchPredictionShard write in
    `namespace`: the API server says no to the workers' reports, as a quota or a policy would."""
    name = f"refuse-reports-{namespace}"[:63]
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["batchpredict.io"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["batchpredictionshards"],
                    }
                ]
            },
            "validations": [{"expression": "false", "message": "reports are refused here"}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    return [policy, binding]
