"""The chart's read-only dashboard (`dashboard.enabled`): off by default; when on, its own
ServiceAccount with get/list/watch only, a hardened Deployment started `--read-only`, and a
Service. (tests/dashboard runs the dashboard under these very rules.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.helm import FULL_VALUES, Helm, by_kind, one
from tests.chart.test_render import RESTRICTED_CONTAINER, rules_of

pytestmark = pytest.mark.chart

COMPONENT = "app.kubernetes.io/component"
READS = {
    (group, resource, verb)
    for group, resources in (
        ("batchpredict.io", ("batchpredictions", "batchpredictionshards")),
        ("batch", ("jobs",)),
        ("", ("pods", "pods/log", "events")),
        ("events.k8s.io", ("events",)),
    )
    for resource in resources
    for verb in ("get", "list", "watch")
}


def dashboard_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["metadata"].get("labels", {}).get(COMPONENT) == "dashboard"]


def test_it_is_off_by_default(helm: Helm) -> None:
    assert dashboard_objects(helm.render()) == []


def test_on_it_reads_every_namespace_and_can_do_nothing_else(helm: Helm) -> None:
    objects = dashboard_objects(helm.render(sets={"dashboard.enabled": "true"}))
    assert sorted(o["kind"] for o in objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    assert account == "batchpredict-dashboard"
    assert rules_of(one(objects, "ClusterRole")) == READS
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": "batchpredict-system"}
    ]
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account
    assert pod["securityContext"]["runAsNonRoot"] is True
    (main,) = pod["containers"]
    assert main["command"] == ["batchpredict-dashboard"]
    assert main["args"] == ["--read-only", "--no-browser", "--host=0.0.0.0", "--port=8080"]
    assert main["securityContext"] == RESTRICTED_CONTAINER
    assert main["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Its pods are not the operator's: the operator's Deployment and Service select only theirs.
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector[COMPONENT] == "dashboard"
    operator = one(helm.render(sets={"dashboard.enabled": "true"}), "Deployment", "batchpredict")
    assert operator["spec"]["selector"]["matchLabels"][COMPONENT] == "operator"
    service = one(objects, "Service")
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]


def test_one_namespace_gets_a_role_there_and_the_flag(helm: Helm) -> None:
    objects = dashboard_objects(helm.render(FULL_VALUES))
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == "ml-team-a"
    assert rules_of(role) == READS
    assert one(objects, "RoleBinding")["metadata"]["namespace"] == "ml-team-a"
    assert not by_kind(objects, "ClusterRole")
    deployment = one(objects, "Deployment")
    (main,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--namespace=ml-team-a" in main["args"]
    assert "--port=9090" in main["args"]
    assert deployment["spec"]["replicas"] == 2


def test_rbac_create_false_leaves_its_role_to_the_platform(helm: Helm) -> None:
    objects = dashboard_objects(
        helm.render(sets={"dashboard.enabled": "true", "rbac.create": "false"})
    )
    assert sorted(o["kind"] for o in objects) == ["Deployment", "Service", "ServiceAccount"]


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        ({"dashboard.enabled": '"yes"'}, "/dashboard/enabled"),
        ({"dashboard.namespace": '"Not_A_Namespace"'}, "/dashboard/namespace"),
        ({"dashboard.port": "70000"}, "/dashboard/port"),
        ({"dashboard.extra": "1"}, "extra"),
    ],
)
def test_schema_names_the_wrong_dashboard_value(
    helm: Helm, sets: dict[str, str], complaint: str
) -> None:
    result = helm.template(sets=sets, check=False)
    assert result.returncode != 0
    assert complaint in result.stderr
