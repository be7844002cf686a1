"""The operator's writes to the Kubernetes API (kubernetes_asyncio), each idempotent."""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from batchpredict.api.v1alpha1 import GROUP, PLURAL, VERSION
from batchpredict.api.v1alpha1.report import REPORT_PLURAL
from batchpredict.reconcile.kueue import KUEUE_GROUP, KUEUE_VERSION, WORKLOAD_PLURAL

CONFLICT = 409
NOT_FOUND = 404
# The API server refuses the object itself (invalid, or denied by an admission policy): trying
# again cannot help.
REFUSED = frozenset({400, 422})


class RefusedError(Exception):
    """The API server refused to create a child; the message says why, in its words."""


async def create_if_absent(create: Any, *args: Any) -> bool:
    """Call a `create_namespaced_*`; False when the object already exists (409): the names are
    deterministic, so an operator restarted between create and status write never doubles."""
    try:
        await create(*args)
    except ApiException as error:
        if error.status == CONFLICT:
            return False
        raise
    return True


async def create_job(api: client.ApiClient, job: dict[str, Any]) -> bool:
    batch = client.BatchV1Api(api)
    try:
        return await create_if_absent(
            batch.create_namespaced_job, job["metadata"]["namespace"], job
        )
    except ApiException as error:
        if error.status in REFUSED:
            detail = _status_message(error)
            raise RefusedError(f"Job {job['metadata']['name']}: {detail}") from None
        raise


def _status_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)


async def ensure_worker_access(
    api: client.ApiClient,
    namespace: str,
    service_account: str,
    cluster_role: str,
    *,
    create_service_account: bool,
) -> None:
    """Let `service_account` write BatchPredictionShard reports in `namespace` (and nothing
    more: the ClusterRole comes from the chart), creating the default ServiceAccount."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    labels = {"app.kubernetes.io/managed-by": "batchpredict"}
    if create_service_account:
        await create_if_absent(
            core.create_namespaced_service_account,
            namespace,
            {"metadata": {"name": service_account, "labels": labels}},
        )
    binding = {
        "metadata": {"name": f"batchpredict-worker-{service_account}"[:253], "labels": labels},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role,
        },
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }
    await create_if_absent(rbac.create_namespaced_role_binding, namespace, binding)


async def patch_job(
    api: client.ApiClient, namespace: str, name: str, patch: dict[str, Any]
) -> None:
    """A merge patch of a Job (suspend, parallelism); a Job already gone is fine."""
    batch = client.BatchV1Api(api)
    try:
        await batch.patch_namespaced_job(name, namespace, patch)
    except ApiException as error:
        if error.status != NOT_FOUND:
            raise


async def patch_workload(
    api: client.ApiClient, namespace: str, name: str, patch: dict[str, Any]
) -> None:
    """A merge patch of a Kueue Workload (spec.active); one already gone is fine."""
    custom = client.CustomObjectsApi(api)
    try:
        # A dict body would otherwise be sent as a JSON patch, the first type the API lists
        # (`_content_type` is a keyword the generated client reads but does not declare).
        options: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
        await custom.patch_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, namespace, WORKLOAD_PLURAL, name, patch, **options
        )
    except ApiException as error:
        if error.status != NOT_FOUND:
            raise


async def delete_batch_prediction(api: client.ApiClient, namespace: str, name: str) -> None:
    """Delete a BatchPrediction; its Jobs and pods follow by owner reference."""
    custom = client.CustomObjectsApi(api)
    try:
        await custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background"
        )
    except ApiException as error:
        if error.status != NOT_FOUND:
            raise


async def delete_report(api: client.ApiClient, namespace: str, name: str) -> None:
    """Delete a finished run's progress report; one already gone is fine."""
    custom = client.CustomObjectsApi(api)
    try:
        await custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, REPORT_PLURAL, name)
    except ApiException as error:
        if error.status != NOT_FOUND:
            raise
