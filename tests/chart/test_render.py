"""The chart without a cluster: lint, what it renders for the values a platform team sets, and the
operator configuration it writes (validated by the operator's own model)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from batchpredict.controller.config import OperatorConfig
from tests.chart.helm import CHART, FULL_VALUES, REPO, Helm, by_kind, one, parse

pytestmark = pytest.mark.chart

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def operator_config(objects: list[dict[str, Any]]) -> OperatorConfig:
    config_maps = [o for o in by_kind(objects, "ConfigMap") if "config.yaml" in o["data"]]
    assert len(config_maps) == 1
    return OperatorConfig.model_validate(yaml.safe_load(config_maps[0]["data"]["config.yaml"]))


def operator_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Without the dashboard's (tests/chart/test_render_dashboard.py)."""
    component = "app.kubernetes.io/component"
    return [o for o in objects if o["metadata"].get("labels", {}).get(component) != "dashboard"]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(operator_objects(objects), "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return dict(pod["containers"][0])


def rules_of(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# Exactly what the operator's code calls (controller/kube.py, handlers.py) and what kopf needs
# (list/watch of what it serves and indexes, patches of the object and its status, core Events):
# not a superset. The chart install test runs a release under these rules alone.
OPERATOR_NEEDS = (
    {("batchpredict.io", "batchpredictions", v) for v in ("list", "watch", "patch", "delete")}
    | {("batchpredict.io", "batchpredictions/status", "patch")}
    | {("batchpredict.io", "batchpredictionshards", v) for v in ("list", "watch", "delete")}
    | {("batch", "jobs", v) for v in ("list", "watch", "create", "patch")}
    | {("", "pods", v) for v in ("list", "watch")}
    | {("", "events", "create")}
    | {
        ("", "serviceaccounts", "create"),
        ("rbac.authorization.k8s.io", "rolebindings", "create"),
        ("rbac.authorization.k8s.io", "clusterroles", "bind"),
    }
)
# With kueue.enabled: Kueue's Workloads, indexed and patched (spec.active).
KUEUE_NEEDS = {("kueue.x-k8s.io", "workloads", v) for v in ("list", "watch", "patch")}
CLUSTER_READS = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
}


def test_lint_strict_with_default_and_full_values(helm: Helm) -> None:
    for args in ([], ["--values", str(FULL_VALUES)]):
        result = helm.run("lint", "--strict", str(CHART), *args)
        assert "0 chart(s) failed" in result.stdout, result.stdout


def test_full_values_set_every_value() -> None:
    """values-full.yaml exercises every option of values.yaml (so the dry run covers them)."""

    def leaves(data: Any, prefix: str = "") -> set[str]:
        if isinstance(data, dict) and data and prefix.count(".") < 2:
            return {p for k, v in data.items() for p in leaves(v, f"{prefix}.{k}")}
        return {prefix}

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    full = yaml.safe_load(FULL_VALUES.read_text())
    missing = {p for p in leaves(defaults) if not _has(full, p)}
    assert not missing, f"values-full.yaml leaves out {sorted(missing)}"


def _has(data: Any, path: str) -> bool:
    for key in path.strip(".").split("."):
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


def test_every_value_is_documented() -> None:
    """Each value has a `# --` comment right above it, or above the object that holds it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the keys enclosing this line
    undocumented = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#"):
            if lines[above].strip().startswith("# --"):
                break
            above -= 1
        documented = above >= 0 and lines[above].strip().startswith("# --")
        inherited = any(doc for _, doc in stack)
        is_leaf = line.split(":", 1)[1].strip() != ""
        if is_leaf and not (documented or inherited):
            undocumented.append(f"line {number + 1}: {line.strip()}")
        stack.append((indent, documented or inherited))
    assert not undocumented, "values without a `# --` comment:\n" + "\n".join(undocumented)


def test_default_install_is_cluster_wide_standalone_and_hardened(helm: Helm) -> None:
    objects = helm.render()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["ServiceAccount", "ConfigMap", "Deployment", "Service"]
        + ["ClusterRole"] * 3
        + ["ClusterRoleBinding"] * 2
        + ["ConfigMap", "Role", "RoleBinding"]  # the node pool list, readable by every user
    )
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # Without peering two operators must never overlap, not even during an upgrade.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    main = container(objects)
    assert main["securityContext"] == RESTRICTED_CONTAINER
    assert main["image"] == "ghcr.io/batchpredict/batchpredict:0.1.0"
    assert main["command"] == ["batchpredict-operator"]
    assert main["args"] == ["--liveness-port=8081"]  # all namespaces, no peering
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {
        "metrics": 8080,
        "healthz": 8081,
    }
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "BATCHPREDICT_CONFIG", "value": "/etc/batchpredict/config.yaml"} in main["env"]
    assert "limits" in main["resources"] and "requests" in main["resources"]
    assert not by_kind(objects, "PodDisruptionBudget")
    assert not by_kind(objects, "ServiceMonitor")


def test_default_config_is_the_operators_defaults(helm: Helm) -> None:
    config = operator_config(helm.render())
    assert config == OperatorConfig(
        worker_image="ghcr.io/batchpredict/batchpredict:0.1.0",
        node_pools_config_map="batchpredict-system/batchpredict-node-pools",
    )


def test_node_pools_are_listed_for_every_user(helm: Helm) -> None:
    """The ConfigMap the UnknownNodePool message and `batchpredict node-pools` point to holds
    the operator's pools, and any authenticated user may read it (that one object only)."""
    objects = helm.render(FULL_VALUES)
    config = operator_config(objects)
    namespace, name = (config.node_pools_config_map or "").split("/")
    listing = one(objects, "ConfigMap", name)
    assert listing["metadata"]["namespace"] == namespace
    assert listing["metadata"]["labels"]["batchpredict.io/node-pools"] == "true"
    pools = yaml.safe_load(listing["data"]["pools.yaml"])
    assert sorted(pools) == sorted(config.node_pools) == ["cpu", "gpu-a100"]
    assert pools["gpu-a100"]["description"] == "A100 80GB nodes, one GPU per pod"
    role = one(objects, "Role", name)
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name], "verbs": ["get"]}
    ]
    binding = one(objects, "RoleBinding", name)
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}
    ]
    private = helm.render(sets={"nodePoolsReadableByAll": "false"})
    assert [r["metadata"]["name"] for r in by_kind(private, "Role")] == []
    empty = one(helm.render(), "ConfigMap", "batchpredict-node-pools")
    assert yaml.safe_load(empty["data"]["pools.yaml"]) == {}


def test_full_values_config_reaches_the_operator(helm: Helm) -> None:
    objects = helm.render(FULL_VALUES)
    config = operator_config(objects)
    # The worker image keeps its digest when it is not the operator's.
    assert config.worker_image == (
        "registry.example.com/ml/batchpredict-worker@sha256:" + "fedcba9876543210" * 4
    )
    assert config.policy.allowed_images == [
        "registry.example.com/ml/",
        "nvcr.io/nvidia/tritonserver@sha256:",
    ]
    assert config.policy.require_image_digest is True
    assert config.policy.allowed_volume_types == ["persistentVolumeClaim", "configMap", "emptyDir"]
    assert config.policy.allowed_service_accounts == ["s3-reader"]
    assert config.policy.allowed_priority_classes == ["batch-low"]
    assert config.policy.allowed_preprocess_modules == ["acme_prep"]
    assert config.worker_command == ["batchpredict-worker", "--log-json"]
    assert config.image_pull_policy == "IfNotPresent"
    assert config.worker_service_account == "bp-runner"
    assert config.worker_cluster_role == "bp-full-runner"
    assert config.default_triton_url == "triton.inference.svc:8001"
    assert config.max_running == 4
    assert config.kueue is True
    assert config.status_interval_seconds == 5
    assert config.failed_items_limit == 50
    assert config.metrics_port == 9080
    gpu = config.node_pools["gpu-a100"]
    assert gpu.node_selector == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert gpu.resources == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"nvidia.com/gpu": 1, "memory": "16Gi"},
    }
    assert gpu.tolerations[0]["key"] == "nvidia.com/gpu"
    assert gpu.affinity is not None
    assert config.node_pools["cpu"].node_selector == {"pool": "cpu"}
    main = container(objects)
    digest = "sha256:" + "0123456789abcdef" * 4
    assert main["image"] == f"registry.example.com/ml/batchpredict@{digest}"
    assert {"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"} in main["env"]


def test_config_change_rolls_the_operator(helm: Helm) -> None:
    def checksum(**sets: str) -> str:
        deployment = one(helm.render(sets=sets), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum() != checksum(maxRunning="2")


def test_rbac_is_least_privilege_without_wildcards(helm: Helm) -> None:
    for objects in (helm.render(), helm.render(FULL_VALUES)):
        for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
    objects = helm.render()
    worker = one(objects, "ClusterRole", "batchpredict-worker")
    assert worker["rules"] == [
        {
            "apiGroups": ["batchpredict.io"],
            "resources": ["batchpredictionshards"],
            "verbs": ["create", "patch"],
        }
    ]
    operator = one(objects, "ClusterRole", "batchpredict-operator")
    assert rules_of(operator) == OPERATOR_NEEDS
    (bind,) = [r for r in operator["rules"] if r["verbs"] == ["bind"]]
    # The operator can bind the worker role, and no other (it cannot escalate through bindings).
    assert bind["resourceNames"] == [operator_config(objects).worker_cluster_role]
    assert rules_of(one(objects, "ClusterRole", "batchpredict-operator-cluster")) == CLUSTER_READS
    with_kueue = helm.render(sets={"kueue.enabled": "true"})
    assert rules_of(one(with_kueue, "ClusterRole", "batchpredict-operator")) == (
        OPERATOR_NEEDS | KUEUE_NEEDS
    )
    assert operator_config(with_kueue).kueue is True
    sa = one(objects, "ServiceAccount")["metadata"]["name"]
    for binding in by_kind(objects, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa, "namespace": "batchpredict-system"}
        ]


def test_rbac_and_service_account_can_be_left_to_the_platform(helm: Helm) -> None:
    failing = helm.template(sets={"serviceAccount.create": "false"}, check=False)
    assert failing.returncode != 0
    assert "serviceAccount.name is required" in failing.stderr
    objects = helm.render(
        sets={
            "rbac.create": "false",
            "serviceAccount.create": "false",
            "serviceAccount.name": '"platform-made"',
        }
    )
    kinds = {o["kind"] for o in objects}
    assert kinds == {"ConfigMap", "Deployment", "Service"}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform-made"


def test_namespaced_mode_grants_roles_in_the_watched_namespaces_only(helm: Helm) -> None:
    objects = helm.render(sets={"watchNamespaces": '["team-a","team-b"]'})
    assert container(objects)["args"] == [
        "--liveness-port=8081",
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    # The node pool list's reader Role lives beside the operator (test_node_pools_are_listed...).
    roles = [r for r in by_kind(objects, "Role") if not r["metadata"]["name"].endswith("-pools")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert rules_of(role) >= OPERATOR_NEEDS
    bindings = [
        b for b in by_kind(objects, "RoleBinding") if not b["metadata"]["name"].endswith("-pools")
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    # Cluster-scoped: the framework's reads and the worker role (bound per run's namespace).
    assert sorted(r["metadata"]["name"] for r in by_kind(objects, "ClusterRole")) == [
        "batchpredict-operator-cluster",
        "batchpredict-worker",
    ]
    cluster_rules = rules_of(one(objects, "ClusterRole", "batchpredict-operator-cluster"))
    assert {rule[0] for rule in cluster_rules} == {"apiextensions.k8s.io", ""}
    assert all(verb in {"get", "list", "watch"} for _, _, verb in cluster_rules)


def test_replicas_turn_peering_on(helm: Helm) -> None:
    objects = helm.render(sets={"replicaCount": "2"})
    assert "--peering=batchpredict" in container(objects)["args"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert one(objects, "ClusterKopfPeering")["metadata"]["name"] == "batchpredict"
    cluster = rules_of(one(objects, "ClusterRole", "batchpredict-operator-cluster"))
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in cluster

    namespaced = helm.render(sets={"replicaCount": "2", "watchNamespaces": '["team-a"]'})
    peering = one(namespaced, "KopfPeering")
    assert peering["metadata"] == {**peering["metadata"], "name": "batchpredict"}
    assert peering["metadata"]["namespace"] == "team-a"
    operator_role = one(namespaced, "Role", "batchpredict-operator")
    assert ("kopf.dev", "kopfpeerings", "patch") in rules_of(operator_role)
    assert not by_kind(namespaced, "ClusterKopfPeering")


def test_metrics_service_monitor_and_disruption_budget(helm: Helm) -> None:
    objects = operator_objects(helm.render(FULL_VALUES))
    service = one(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2

    blocked = helm.template(sets={"podDisruptionBudget.enabled": "true"}, check=False)
    assert blocked.returncode != 0
    assert "podDisruptionBudget.minAvailable (1) must be below replicaCount (1)" in blocked.stderr


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        ({"replicaCount": "0"}, "replicaCount"),
        ({"image": '{"repository": "x", "pullPolicy": "Sometimes"}'}, "pullPolicy"),
        ({"maxRunnning": "3"}, "maxRunnning"),
        ({"watchNamespaces": '["Team_A"]'}, "watchNamespaces"),
        ({"nodePools": '{"gpu": {"nodeSelectors": {}}}'}, "nodeSelectors"),
        ({"metrics": '{"port": 70000}'}, "port"),
    ],
)
def test_schema_names_the_wrong_value(helm: Helm, sets: dict[str, str], complaint: str) -> None:
    result = helm.template(sets=sets, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


def test_names_fit_in_63_characters(helm: Helm) -> None:
    release = "a-very-long-release-name-for-the-batch-prediction-op"  # helm's limit: 53
    for sets in ({}, {"fullnameOverride": '"' + "x" * 70 + '"'}):
        objects = helm.render(release=release, sets={"replicaCount": "2", **sets})
        names = [(o["kind"], o["metadata"]["name"]) for o in objects]
        assert all(len(name) <= 63 for _, name in names), names
        assert len(set(names)) == len(names), names
        worker = operator_config(objects).worker_cluster_role
        assert worker.endswith("-worker")
        assert worker in {name for kind, name in names if kind == "ClusterRole"}


def test_crds_ship_with_the_chart(helm: Helm) -> None:
    # `helm show crds` concatenates the files without `---` between them: match the names.
    text = helm.run("show", "crds", str(CHART)).stdout
    assert sorted(re.findall(r"^  name: (\S+)$", text, re.MULTILINE)) == [
        "batchpredictions.batchpredict.io",
        "batchpredictionshards.batchpredict.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ]


MAP = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"


def test_started_by_policy_is_the_deploy_manifest(helm: Helm) -> None:
    """The chart's MutatingAdmissionPolicy is deploy/started-by-policy.yaml's, where served."""
    assert not by_kind(helm.render(), "MutatingAdmissionPolicy"), "API not served: left out"
    objects = helm.render(api_versions=(MAP,))
    policy = one(objects, "MutatingAdmissionPolicy")
    binding = one(objects, "MutatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"]}
    deploy = {o["kind"]: o for o in parse((REPO / "deploy" / "started-by-policy.yaml").read_text())}
    assert policy["spec"] == deploy["MutatingAdmissionPolicy"]["spec"]
    disabled = helm.render(api_versions=(MAP,), sets={"startedByPolicy.enabled": "false"})
    assert not by_kind(disabled, "MutatingAdmissionPolicy")
    namespaced = helm.render(api_versions=(MAP,), sets={"watchNamespaces": '["team-a"]'})
    selector = one(namespaced, "MutatingAdmissionPolicyBinding")["spec"]["matchResources"]
    assert selector["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a"]


VAP = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"


def test_tenancy_policy_is_the_deploy_manifest_and_follows_the_values(helm: Helm) -> None:
    """The ValidatingAdmissionPolicy (where served) checks the author's rights; its image and
    volume lists are the `policy` values the operator enforces too (tests/chart/test_tenancy.py
    runs it on a real API server)."""
    default = helm.render()
    assert not by_kind(default, "ValidatingAdmissionPolicy"), "API not served: left out"
    assert operator_config(default).started_by_verified is False
    objects = helm.render(api_versions=(VAP,))
    policy = one(objects, "ValidatingAdmissionPolicy")
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == [
        "CREATE",
        "UPDATE",
    ]
    config = operator_config(objects)
    assert config.started_by_verified is True, "the annotation is guarded: STARTED BY is trusted"
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert yaml.safe_load(variables["allowedImages"]) == config.policy.allowed_images
    assert yaml.safe_load(variables["allowedVolumeTypes"]) == config.policy.allowed_volume_types
    assert f"&& i != '{config.worker_image}'" in variables["badImages"]
    messages = " ".join(v["messageExpression"] for v in policy["spec"]["validations"][:-1])
    for field in (
        "spec.triton.tls.secretName",
        "spec.triton.headersSecret",
        "spec.worker.env",
        "spec.worker.volumes",
        "spec.worker.serviceAccountName",
        "spec.worker.image",
        "metadata.annotations[batchpredict.io/started-by]",
    ):
        assert f"'{field}" in messages, field
    deploy = {o["kind"]: o for o in parse((REPO / "deploy" / "tenancy-policy.yaml").read_text())}
    assert policy["spec"] == deploy["ValidatingAdmissionPolicy"]["spec"]
    assert binding["spec"] == deploy["ValidatingAdmissionPolicyBinding"]["spec"]
    full = helm.render(FULL_VALUES, api_versions=(VAP,))
    full_policy = one(full, "ValidatingAdmissionPolicy")
    full_vars = {v["name"]: v["expression"] for v in full_policy["spec"]["variables"]}
    assert "!i.contains('@sha256:')" in full_vars["badImages"], "requireImageDigest"
    selector = one(full, "ValidatingAdmissionPolicyBinding")["spec"]["matchResources"]
    assert selector["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "ml-team-a",
        "ml-team-b",
    ]
    disabled = helm.render(api_versions=(VAP,), sets={"admissionPolicy.enabled": "false"})
    assert not by_kind(disabled, "ValidatingAdmissionPolicy")
    assert operator_config(disabled).started_by_verified is False


def test_network_policy_and_listen_address(helm: Helm) -> None:
    assert not by_kind(helm.render(), "NetworkPolicy")
    main = container(helm.render())
    pod_ip = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    assert pod_ip in main["env"], "metrics and /healthz listen on the pod IP, not 0.0.0.0"
    policy = one(helm.render(FULL_VALUES), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": 9080, "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    api = policy["egress"][1]
    assert api == {
        "ports": [{"port": 6443, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
    }
