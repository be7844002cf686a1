"""Tenancy on a real API server: with the chart's admission policies, creating or changing a
BatchPrediction grants its author nothing they could not do themselves. `kubectl --as` plays a
user who may create BatchPredictions in one namespace and do nothing else there; every refusal
names the field."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.helm import CHART, Helm
from tests.harness.fixtures import Cluster

pytestmark = pytest.mark.chart

VAP = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
MAP = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"
POLICY_KINDS = {
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
}
USER = "alice"
AS_USER = f"--as={USER}"
SECRET = "db-password"  # noqa: S105 (a Secret's name, not a password)
ACCOUNT = "namespace-admin"
STARTED_BY = "batchpredict.io/started-by"
SPEC: dict[str, Any] = {
    "model": {"name": "m"},
    "triton": {"url": "triton.models:8001"},
    "input": {"uri": "/data/in.jsonl", "format": "jsonl"},
    "output": {"uri": "/data/out"},
}
SECRET_ENV = {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "pw"}}}
# (what the spec names, what the refusal says): each is something the user may not do directly.
REFUSED: list[tuple[dict[str, Any], str]] = [
    (
        {"triton": {"url": "https://evil.example:8000", "headersSecret": SECRET}},
        f"spec.triton.headersSecret: {USER} may not get Secret {SECRET}",
    ),
    (
        {"triton": {"url": "triton.models:8001", "tls": {"secretName": SECRET}}},
        f"spec.triton.tls.secretName: {USER} may not get Secret {SECRET}",
    ),
    (
        {"worker": {"env": [SECRET_ENV]}},
        f"spec.worker.env: {USER} may not get every Secret it names ({SECRET})",
    ),
    (
        {"worker": {"volumes": [{"name": "creds", "secret": {"secretName": SECRET}}]}},
        f"spec.worker.volumes: {USER} may not get every Secret that volumes creds name",
    ),
    (
        {
            "worker": {
                "volumes": [
                    {"name": "bundle", "projected": {"sources": [{"secret": {"name": SECRET}}]}}
                ]
            }
        },
        f"spec.worker.volumes: {USER} may not get every Secret that volumes bundle name",
    ),
    (
        {"worker": {"serviceAccountName": ACCOUNT}},
        f"spec.worker.serviceAccountName: {USER} may not impersonate ServiceAccount {ACCOUNT}",
    ),
    (
        {"worker": {"image": "evil.example/miner:1"}},
        "spec.worker.image/spec.triton.sidecar.image: evil.example/miner:1 is not an allowed image",
    ),
    (
        {"triton": {"sidecar": {"image": "evil.example/triton:1", "modelRepository": "s3://b/m"}}},
        "spec.worker.image/spec.triton.sidecar.image: evil.example/triton:1 is not an allowed",
    ),
    (
        {"worker": {"volumes": [{"name": "node", "hostPath": {"path": "/"}}]}},
        "spec.worker.volumes: volume node has a type that is not allowed",
    ),
    # The CRD's own rules (no admission policy needed).
    (
        {"worker": {"env": [{"name": "BATCHPREDICT_RUN_UID", "value": "another-run"}]}},
        "spec.worker.env[0]: Invalid value: names starting with BATCHPREDICT_ are "
        "the operator's own",
    ),
    (
        {"triton": {"url": "evil.example:8001", "headersSecret": SECRET}},
        "spec.triton: Invalid value: triton.headersSecret needs TLS",
    ),
]


def body(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> str:
    metadata: dict[str, Any] = {"name": name}
    if annotations:
        metadata["annotations"] = annotations
    return json.dumps(
        {
            "apiVersion": "batchpredict.io/v1alpha1",
            "kind": "BatchPrediction",
            "metadata": metadata,
            "spec": {**SPEC, **spec},
        }
    )


@pytest.fixture(scope="module")
def served(cluster: Cluster) -> tuple[str, ...]:
    """The chart's CRDs installed; the admission APIs this API server serves."""
    cluster.kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/batchpredictions.batchpredict.io")
    names = cluster.kubectl(
        "api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name"
    ).stdout.split()
    apis = {
        "validatingadmissionpolicies.admissionregistration.k8s.io": VAP,
        "mutatingadmissionpolicies.admissionregistration.k8s.io": MAP,
    }
    found = tuple(api for name, api in apis.items() if name in names)
    if VAP not in found:
        pytest.skip("this API server serves no admissionregistration.k8s.io/v1 policies")
    return found


@pytest.fixture
def tenant(cluster: Cluster, helm: Helm, served: tuple[str, ...], namespace: str) -> Iterator[str]:
    """The chart's admission policies bound to `namespace` (as in namespaced mode), a Secret and
    a ServiceAccount there, and a user who may create and change BatchPredictions only."""
    release = f"tenancy-{uuid.uuid4().hex[:6]}"
    objects = helm.render(
        release=release,
        namespace=namespace,
        api_versions=served,
        sets={"watchNamespaces": json.dumps([namespace])},
    )
    policies = [o for o in objects if o["kind"] in POLICY_KINDS]
    assert {o["kind"] for o in policies} >= {
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for policy in policies:
        cluster.apply(policy)
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET},
            "stringData": {"pw": "hunter2"},
        },
        namespace,
    )
    cluster.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT}}, namespace
    )
    grant(
        cluster,
        namespace,
        "author",
        [
            {
                "apiGroups": ["batchpredict.io"],
                "resources": ["batchpredictions"],
                "verbs": ["create", "get", "list", "watch", "update", "patch"],
            }
        ],
    )
    # A policy is enforced once the API server has compiled it: wait for a refusal.
    cluster.wait_for(
        lambda: (
            "may not get Secret"
            in create("probe", namespace, dry_run=True, triton=REFUSED[0][0]["triton"])(cluster)
        ),
        "the tenancy policy to be enforced",
        timeout=60,
    )
    yield namespace
    for policy in reversed(policies):
        kind, name = policy["kind"].lower(), policy["metadata"]["name"]
        cluster.kubectl("delete", kind, name, "--ignore-not-found", check=False)


def grant(cluster: Cluster, namespace: str, name: str, rules: list[dict[str, Any]]) -> None:
    """A Role with `rules` bound to the user in `namespace`."""
    cluster.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": rules,
        },
        namespace,
    )
    cluster.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
        },
        namespace,
    )


def create(
    name: str,
    namespace: str,
    *,
    dry_run: bool = False,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> Any:
    """A function of the cluster: `kubectl create` as the user; its stderr ('' when created)."""

    def run(cluster: Cluster) -> str:
        args = ["create", "-n", namespace, AS_USER, "-f", "-"]
        if dry_run:
            args.append("--dry-run=server")
        result = cluster.kubectl(*args, stdin=body(name, annotations, **spec), check=False)
        return "" if result.returncode == 0 else result.stderr

    return run


def test_an_author_cannot_name_what_they_may_not_use_themselves(
    cluster: Cluster, tenant: str
) -> None:
    for n, (spec, message) in enumerate(REFUSED):
        # Older API servers say `Invalid value: "object": ` for a CEL rule of an object.
        refused = create(f"refused-{n}", tenant, **spec)(cluster).replace('"object": ', "")
        assert message in refused, (spec, refused)
        assert cluster.get("batchpredictions.batchpredict.io", f"refused-{n}", tenant) is None
    # Once the user may read the Secret and impersonate the ServiceAccount, the same runs are
    # theirs to create: the policy checks the author's rights, it does not forbid the fields.
    grant(
        cluster,
        tenant,
        "reader",
        [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [SECRET],
                "verbs": ["get"],
            },
            {
                "apiGroups": [""],
                "resources": ["serviceaccounts"],
                "resourceNames": [ACCOUNT],
                "verbs": ["impersonate"],
            },
        ],
    )
    for n, (spec, message) in enumerate(REFUSED[:6]):
        assert cluster.wait_for(
            lambda spec=spec, n=n: create(f"allowed-{n}", tenant, **spec)(cluster) == "",
            f"{message!r} to be allowed once granted",
            timeout=30,
        )


def test_started_by_is_the_author_and_never_changes(cluster: Cluster, tenant: str) -> None:
    forged = create("forged", tenant, annotations={STARTED_BY: "admin"})(cluster)
    stored = cluster.get("batchpredictions.batchpredict.io", "forged", tenant)
    if forged:  # no MutatingAdmissionPolicy served: the forged name is refused
        assert "metadata.annotations[batchpredict.io/started-by]: must be left out" in forged
        assert stored is None
        assert create("forged", tenant)(cluster) == ""
        return
    # The MutatingAdmissionPolicy wrote the requesting user over the forged name.
    assert stored["metadata"]["annotations"][STARTED_BY] == USER
    for who in ([AS_USER], []):  # the author, and even a cluster admin
        for change in (f"{STARTED_BY}=admin", f"{STARTED_BY}-"):
            refused = cluster.kubectl(
                "annotate",
                "--overwrite",
                "-n",
                tenant,
                "bp",
                "forged",
                change,
                *who,
                check=False,
            )
            assert refused.returncode != 0
            assert (
                "metadata.annotations[batchpredict.io/started-by]: cannot change once the run "
                "is created" in refused.stderr
            ), refused.stderr
    stored = cluster.get("batchpredictions.batchpredict.io", "forged", tenant)
    assert stored["metadata"]["annotations"][STARTED_BY] == USER


def test_an_update_is_checked_for_what_it_adds_only(cluster: Cluster, tenant: str) -> None:
    """Someone else's run naming a Secret can still be suspended or annotated (the operator's
    own patches pass the same way), but not changed to name one the updater may not read."""
    cluster.apply(body("admins", **{"worker": {"env": [SECRET_ENV]}}), tenant)
    for change in (
        ("patch", "bp", "admins", "--type=merge", "-p", '{"spec":{"suspend":true}}'),
        ("annotate", "bp", "admins", "batchpredict.io/cancel=true"),
    ):
        cluster.kubectl(*change, "-n", tenant, AS_USER)
    added = json.dumps(
        {"spec": {"triton": {"url": "https://t:8000", "tls": {"secretName": SECRET}}}}
    )
    refused = cluster.kubectl(
        "patch", "bp", "admins", "--type=merge", "-p", added, "-n", tenant, AS_USER, check=False
    )
    assert f"spec.triton.tls.secretName: {USER} may not get Secret {SECRET}" in refused.stderr
