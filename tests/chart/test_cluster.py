"""The chart on a real API server: server-side dry runs, and a release whose operator pod (run by
the node agent on the local cluster, or a real kubelet on kind) serves a BatchPrediction end to
end against real Triton in a namespace that enforces Pod Security "restricted"; then upgrade
and uninstall."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART, FULL_VALUES, Helm, parse
from tests.harness.components import audit_log
from tests.harness.fixtures import Cluster
from tests.harness.served import crd_resources, install_crds, wait_until_served
from tests.harness.triton_server import TritonHandle

pytestmark = pytest.mark.chart

MAP = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"
VAP = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
CHART_CRDS = (
    "batchpredictions.batchpredict.io",
    "batchpredictionshards.batchpredict.io",
    "clusterkopfpeerings.kopf.dev",
    "kopfpeerings.kopf.dev",
)
# Enough for the dry run of `metrics.serviceMonitor.enabled`: prometheus-operator's CRD, reduced.
SERVICE_MONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "ServiceMonitor",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def chart_crds(cluster: Cluster) -> Cluster:
    """The chart's CRDs, as `helm install` would create them (it skips those that exist)."""
    install_crds(cluster.kubectl, CHART / "crds")
    cluster.apply(SERVICE_MONITOR_CRD)
    wait_until_served(cluster.kubectl, crd_resources([SERVICE_MONITOR_CRD]))
    return cluster


def served_extras(cluster: Cluster) -> tuple[str, ...]:
    """APIs helm must be told about for `helm template` (it assumes only built-in ones)."""
    resources = cluster.kubectl(
        "api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name"
    ).stdout.split()
    kinds = {
        "mutatingadmissionpolicies.admissionregistration.k8s.io": MAP,
        "validatingadmissionpolicies.admissionregistration.k8s.io": VAP,
    }
    return tuple(api for name, api in kinds.items() if name in resources)


def test_server_dry_run_accepts_default_and_full_values(
    chart_crds: Cluster, helm: Helm, namespace: str
) -> None:
    extras = served_extras(chart_crds)
    for files, sets in (
        ((), {}),
        (
            (FULL_VALUES,),
            {
                "watchNamespaces": json.dumps([namespace]),
                "dashboard.namespace": json.dumps(namespace),
            },
        ),
        ((), {"replicaCount": "2", "podDisruptionBudget.enabled": "true"}),
        ((), {"dashboard.enabled": "true"}),
    ):
        rendered = helm.template(*files, namespace=namespace, sets=sets, api_versions=extras)
        objects = parse(rendered.stdout)
        result = chart_crds.kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=rendered.stdout
        )
        accepted = result.stdout.count("(server dry run)")
        assert accepted == len(objects), (files, sets, result.stdout)
    if MAP in extras:
        assert "mutatingadmissionpolicy" in result.stdout
    if VAP in extras:  # its CEL compiled by the API server
        assert "validatingadmissionpolicy" in result.stdout


# -- install, upgrade, uninstall ---------------------------------------------------------------


def _batch_prediction(
    name: str, triton: TritonHandle, tmp_path: Path
) -> tuple[dict[str, Any], Path]:
    dataset = tmp_path / f"{name}.jsonl"
    dataset.write_text("".join(json.dumps({"id": f"item-{n}", "x": n}) + "\n" for n in range(200)))
    output = tmp_path / f"{name}-out"
    body = {
        "apiVersion": "batchpredict.io/v1alpha1",
        "kind": "BatchPrediction",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "double"},
            "triton": {"url": triton.grpc_url},
            "input": {"uri": str(dataset), "format": "jsonl", "idField": "id"},
            "output": {"uri": str(output)},
            "shards": 2,
            "parallelism": 2,
        },
    }
    return body, output


def _wait_for_phase(cluster: Cluster, name: str, namespace: str, release: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        found = cluster.get("batchpredictions.batchpredict.io", name, namespace) or {}
        status = found.get("status") or {}
        if status.get("phase") in {"Succeeded", "Failed", "PartiallySucceeded"}:
            return status
        time.sleep(1)
    pods = cluster.kubectl("get", "pods,jobs", "-n", namespace, check=False).stdout
    logs = cluster.kubectl(
        "logs",
        "-n",
        namespace,
        "-l",
        f"app.kubernetes.io/instance={release}",
        "--tail=40",
        check=False,
    )
    raise AssertionError(
        f"{name} did not finish; status: {json.dumps(status)}\n{pods}\n"
        f"operator log:\n{logs.stdout}{logs.stderr}"
    )


def _released(cluster: Cluster, release: str, namespace: str) -> list[str]:
    """Every object left that carries the release's instance label."""
    selector = f"app.kubernetes.io/instance={release}"
    kinds = "deployments,replicasets,pods,services,configmaps,serviceaccounts,roles,rolebindings"
    names = cluster.kubectl("get", kinds, "-n", namespace, "-l", selector, "-o", "name").stdout
    cluster_kinds = (
        "clusterroles,clusterrolebindings,mutatingadmissionpolicies,"
        "mutatingadmissionpolicybindings,validatingadmissionpolicies,"
        "validatingadmissionpolicybindings,poddisruptionbudgets,clusterkopfpeerings"
    )
    names += cluster.kubectl(
        "get", cluster_kinds, "-A", "-l", selector, "-o", "name", check=False
    ).stdout
    return names.split()


@pytest.fixture
def release(chart_crds: Cluster, helm: Helm, namespace: str) -> Iterator[str]:
    """A release name; uninstalled afterwards if the test left it installed."""
    name = f"bp-{uuid.uuid4().hex[:6]}"
    yield name
    helm.run("uninstall", name, "--namespace", namespace, check=False, env=chart_crds.env())


def test_install_serves_a_run_then_upgrade_and_uninstall_leave_only_crds_and_outputs(
    chart_crds: Cluster,
    helm: Helm,
    namespace: str,
    release: str,
    triton_server: TritonHandle,
    tmp_path: Path,
) -> None:
    cluster = chart_crds
    fullname = f"{release}-batchpredict"
    worker_sa = "batchpredict-worker"
    values: dict[str, Any] = {
        # Namespaced mode: this release serves the test's namespace only.
        "watchNamespaces": [namespace],
        "statusIntervalSeconds": 1,
        # The node agent's pods share the host's network: free ports, not 8080/8081.
        "metrics": {"port": free_port()},
        "operator": {"livenessPort": free_port()},
    }
    if os.environ.get("BATCHPREDICT_IMAGE"):  # kind: the image `make kind-e2e` built and loaded
        repository, tag = os.environ["BATCHPREDICT_IMAGE"].rsplit(":", 1)
        values["image"] = {"repository": repository, "tag": tag, "pullPolicy": "Never"}
    # Pod Security "restricted" is enforced on the operator pod and on every worker pod.
    cluster.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))

    started = time.monotonic()
    install = helm.run(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        str(values_file),
        "--wait",
        "--timeout",
        "180s",
        env=cluster.env(),
    )
    install_s = time.monotonic() - started
    notes = install.stdout.split("NOTES:", 1)[1]
    assert f"rollout status deployment/{fullname}" in notes
    assert "kubectl get batchpredictions" in notes
    assert f"the namespaces {namespace}" in notes

    # A run, served by the operator pod the chart deployed. Its dataset, output and Triton are
    # on this machine: reachable from the local node agent's pods, not from kind's nodes.
    if not cluster.local:
        _install_upgrade_uninstall_only(cluster, helm, release, namespace, values_file, values)
        return
    bp, output = _batch_prediction("first", triton_server, tmp_path)
    cluster.apply(bp, namespace)
    status = _wait_for_phase(cluster, "first", namespace, release)
    assert status["phase"] == "Succeeded", status
    assert status["items"]["succeeded"] == 200
    assert status["items"]["failed"] == 0
    # The chart's admission policies guard the annotation, so STARTED BY is trusted as is.
    assert status.get("startedBy") and "unverified" not in status["startedBy"], status
    predicted = [
        json.loads(line)["id"]
        for path in sorted(output.rglob("predictions-*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    assert sorted(predicted) == sorted(f"item-{n}" for n in range(200))
    # Worker pods were admitted under "restricted" (none was refused by PodSecurity).
    jobs = cluster.get("jobs", namespace=namespace)["items"]
    uid = cluster.get("bp", "first", namespace)["metadata"]["uid"][:8]
    wanted = {f"first-{uid}-{step}" for step in ("plan", "r0", "finalize")}
    assert {j["metadata"]["name"] for j in jobs} >= wanted
    refused = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=FailedCreate", check=False
    ).stdout
    assert "violates PodSecurity" not in refused, refused

    # The worker's ServiceAccount (bound by the operator) writes reports, and nothing else.
    as_worker = f"--as=system:serviceaccount:{namespace}:{worker_sa}"
    (operator_pod,) = _pod_names(cluster, namespace, release)
    label = '{"metadata":{"labels":{"x":"y"}}}'
    for args in (
        ("patch", "bp", "first", "--type=merge", "-p", label),
        ("patch", "pod", operator_pod, "--type=merge", "-p", label),
        ("get", "pods"),
    ):
        refused = cluster.kubectl(*args, "-n", namespace, as_worker, check=False)
        assert refused.returncode != 0 and "Forbidden" in refused.stderr, (args, refused)
    allowed = cluster.kubectl(
        "auth",
        "can-i",
        "patch",
        "batchpredictionshards.batchpredict.io",
        "-n",
        namespace,
        as_worker,
        check=False,
    )
    assert allowed.stdout.strip() == "yes"

    # Upgrade with changed values: the config reaches a new operator pod, which serves runs.
    old_pods = set(_pod_names(cluster, namespace, release))
    values["maxRunning"] = 1
    values["failedItemsLimit"] = 5
    values_file.write_text(yaml.safe_dump(values))
    helm.run(
        "upgrade",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        str(values_file),
        "--wait",
        "--timeout",
        "180s",
        env=cluster.env(),
    )
    config_map = cluster.get("configmap", f"{fullname}-config", namespace)
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["maxRunning"] == 1 and config["failedItemsLimit"] == 5
    new_pods = set(_pod_names(cluster, namespace, release))
    assert new_pods and not new_pods & old_pods, (old_pods, new_pods)
    bp, _ = _batch_prediction("second", triton_server, tmp_path)
    cluster.apply(bp, namespace)
    assert _wait_for_phase(cluster, "second", namespace, release)["phase"] == "Succeeded"

    # Least privilege, measured: what the operator's and the workers' ServiceAccounts did on
    # the API server (its audit log) is exactly what the chart grants them, but for what only
    # a TTL deletion or a suspend exercises. `bind` is checked on a RoleBinding's create.
    if cluster.state_dir is not None:
        role = cluster.get("role", f"{fullname}-operator", namespace)
        granted = {r for r in rules_of(role) if r[1] != "kopfpeerings"}
        used, refused = audited(cluster.state_dir, f"system:serviceaccount:{namespace}:{fullname}")
        assert not refused, f"the operator was refused: {sorted(refused)}"
        cluster_rules = rules_of(cluster.get("clusterrole", f"{fullname}-operator-cluster"))
        namespaced_use = used - cluster_rules
        assert namespaced_use <= granted, sorted(namespaced_use - granted)
        assert granted - namespaced_use == OPERATOR_UNEXERCISED, sorted(granted - namespaced_use)
        worker_used, worker_refused = audited(
            cluster.state_dir, f"system:serviceaccount:{namespace}:{worker_sa}"
        )
        worker_granted = rules_of(cluster.get("clusterrole", f"{fullname}-worker"))
        assert worker_used <= worker_granted, sorted(worker_used - worker_granted)
        # `patch` is each later progress write of a shard: these shards end before their first.
        assert worker_granted - worker_used <= {
            ("batchpredict.io", "batchpredictionshards", "patch")
        }
        assert not worker_refused, sorted(worker_refused)

    # Uninstall: nothing of the release is left; the CRDs (and so the runs) and outputs are.
    helm.run("uninstall", release, "--namespace", namespace, "--wait", env=cluster.env())
    cluster.wait_for(
        lambda: not _released(cluster, release, namespace) or None,
        f"release {release}'s objects to go",
    )
    for crd in CHART_CRDS:
        assert cluster.get("crd", crd) is not None, f"uninstall removed CRD {crd}"
    assert cluster.get("batchpredictions.batchpredict.io", "first", namespace) is not None
    assert list(output.rglob("predictions-*.jsonl"))
    # The worker ClusterRole went with the release, so the RoleBinding the operator made for
    # the worker ServiceAccount in this namespace grants nothing any more.
    assert cluster.get("clusterrole", f"{fullname}-worker") is None
    revoked = cluster.kubectl(
        "auth",
        "can-i",
        "patch",
        "batchpredictionshards.batchpredict.io",
        "-n",
        namespace,
        as_worker,
        check=False,
    )
    assert revoked.stdout.strip().startswith("no"), revoked.stdout
    print(f"helm install --wait took {install_s:.1f} s")


# Granted to the operator and used only by paths this test does not take: deleting a run after
# ttlSecondsAfterFinished, patching a Job's suspend/parallelism, and `bind` (an authorization
# check on the RoleBinding's create, not a request of its own).
OPERATOR_UNEXERCISED = {
    ("batchpredict.io", "batchpredictions", "delete"),
    ("batch", "jobs", "patch"),
    ("rbac.authorization.k8s.io", "clusterroles", "bind"),
}


def rules_of(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def audited(
    state_dir: Path, user: str
) -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str, int]]]:
    """(group, resource[/subresource], verb) of `user`'s requests in the API server's audit log:
    those allowed, and those refused with 403."""
    used: set[tuple[str, str, str]] = set()
    refused: set[tuple[str, str, str, int]] = set()
    for line in audit_log(state_dir).read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef")
        if event["user"]["username"] != user or not ref:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        key = (ref.get("apiGroup", ""), resource, event["verb"])
        code = event.get("responseStatus", {}).get("code", 200)
        if code == 403:
            refused.add((*key, code))
        else:
            used.add(key)
    return used, refused


def _pod_names(cluster: Cluster, namespace: str, release: str) -> list[str]:
    pods = cluster.get("pods", namespace=namespace)["items"]
    return [
        p["metadata"]["name"]
        for p in pods
        if p["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == release
        and p.get("status", {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
    ]


def _install_upgrade_uninstall_only(
    cluster: Cluster,
    helm: Helm,
    release: str,
    namespace: str,
    values_file: Path,
    values: dict[str, Any],
) -> None:
    """On a cluster whose pods cannot reach this machine (kind): the release's lifecycle only."""
    values["maxRunning"] = 1
    values_file.write_text(yaml.safe_dump(values))
    helm.run(
        "upgrade",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        str(values_file),
        "--wait",
        "--timeout",
        "180s",
        env=cluster.env(),
    )
    helm.run("uninstall", release, "--namespace", namespace, "--wait", env=cluster.env())
    cluster.wait_for(
        lambda: not _released(cluster, release, namespace) or None,
        f"release {release}'s objects to go",
    )
    for crd in CHART_CRDS:
        assert cluster.get("crd", crd) is not None, f"uninstall removed CRD {crd}"
