"""The dashboard's Kubernetes calls, with the credentials it was started with: the user's
kubeconfig (local mode: every read and action is the user's own) or the pod's ServiceAccount
(read-only in-cluster mode). Objects come back as plain dicts in the API's own camelCase."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from batchpredict.api.v1alpha1 import GROUP, VERSION
from batchpredict.reconcile.naming import LABEL_RUN

RUNS = "batchpredictions"
REPORTS = "batchpredictionshards"
LOG_TAIL_LINES = 2000


class KubeError(Exception):
    """The API server refused: its HTTP status and its own message, shown to the user as is."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def api_message(error: ApiException) -> KubeError:
    try:
        body = json.loads(error.body or "{}")
        message = str(body.get("message") or error.reason)
    except (TypeError, ValueError):
        message = str(error.body or error.reason)
    return KubeError(int(error.status or 500), message)


@dataclass
class Kube:
    api: client.ApiClient

    def __post_init__(self) -> None:
        # Any: the generated stubs lack the `_content_type` and optional `dry_run` it takes.
        self.custom: Any = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)

    def _plain(self, obj: Any) -> Any:
        return self.api.sanitize_for_serialization(obj)

    # --- runs --------------------------------------------------------------------------
    async def list_runs(self, namespace: str | None) -> dict[str, Any]:
        try:
            if namespace:
                return dict(
                    await self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, RUNS)
                )
            return dict(await self.custom.list_cluster_custom_object(GROUP, VERSION, RUNS))
        except ApiException as error:
            raise api_message(error) from error

    async def watch_runs(
        self, namespace: str | None, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) from a watch from `resource_version`, until the server ends it."""
        stream = watch.Watch()
        if namespace:
            call: Any = self.custom.list_namespaced_custom_object
            args: tuple[str, ...] = (GROUP, VERSION, namespace, RUNS)
        else:
            call, args = self.custom.list_cluster_custom_object, (GROUP, VERSION, RUNS)
        try:
            async with stream.stream(
                call,
                *args,
                resource_version=resource_version,
                timeout_seconds=300,
                allow_watch_bookmarks=True,
            ) as events:
                async for event in events:
                    yield str(event["type"]), dict(event["object"])
        except ApiException as error:
            raise api_message(error) from error

    async def get_run(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return dict(
                await self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, RUNS, name
                )
            )
        except ApiException as error:
            raise api_message(error) from error

    async def patch_run(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        try:
            await self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                RUNS,
                name,
                patch,
                _content_type="application/merge-patch+json",
            )
        except ApiException as error:
            raise api_message(error) from error

    async def create_run(self, namespace: str, body: dict[str, Any], dry_run: bool) -> None:
        """Create (or with `dry_run`, have the API server validate as it would create: schema,
        CEL rules and admission) a BatchPrediction."""
        try:
            await self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, RUNS, body, dry_run="All" if dry_run else None
            )
        except ApiException as error:
            raise api_message(error) from error

    # --- what belongs to a run ------------------------------------------------------------
    async def children(self, namespace: str, uid: str) -> dict[str, list[dict[str, Any]]]:
        """Jobs, pods and shard reports labelled with the run's UID. Each list is empty when
        the credentials may not read it (a view shows what it can)."""
        selector = f"{LABEL_RUN}={uid}"
        found: dict[str, list[dict[str, Any]]] = {"jobs": [], "pods": [], "reports": []}
        try:
            jobs = await self.batch.list_namespaced_job(namespace, label_selector=selector)
            found["jobs"] = self._plain(jobs).get("items", [])
        except ApiException:
            pass
        try:
            pods = await self.core.list_namespaced_pod(namespace, label_selector=selector)
            found["pods"] = self._plain(pods).get("items", [])
        except ApiException:
            pass
        try:
            reports = await self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, REPORTS, label_selector=selector
            )
            found["reports"] = list(reports.get("items", []))
        except ApiException:
            pass
        return found

    async def events(self, namespace: str, name: str, uid: str) -> list[dict[str, Any]]:
        try:
            events = await self.core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.uid={uid}"
            )
        except ApiException:
            return []
        return list(self._plain(events).get("items", []))

    async def pod_log(self, namespace: str, pod: str, container: str | None) -> str:
        options: dict[str, Any] = {"tail_lines": LOG_TAIL_LINES}
        if container:
            options["container"] = container
        try:
            text = await self.core.read_namespaced_pod_log(pod, namespace, **options)
        except ApiException as error:
            raise api_message(error) from error
        return str(text)

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return dict(self._plain(await self.core.read_namespaced_pod(name, namespace)))
        except ApiException as error:
            raise api_message(error) from error
