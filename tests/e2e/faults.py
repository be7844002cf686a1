"""Fault injection for the e2e fault suite: an API server that goes away and comes back, and
reports the API server refuses (the restartable Triton is in tests/harness/triton_server.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.harness import procs
from tests.harness.cluster import LocalCluster
from tests.harness.fixtures import Cluster


def restart_apiserver(cluster: Cluster, down_seconds: float = 3.0) -> None:
    """Stop kube-apiserver, keep it down for `down_seconds` (clients see connection refused),
    start it again over the kept state and wait until it is ready."""
    if cluster.state_dir is None:
        pytest.skip("restarts the local control plane's API server (not a KUBECONFIG cluster)")
    local = LocalCluster(cluster.state_dir)
    pid = procs.pid_from_file(local.state_dir / "pids" / "kube-apiserver.pid")
    if pid is not None:
        procs.stop([pid], grace=3.0)
    time.sleep(down_seconds)
    local.restart_apiserver()


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
