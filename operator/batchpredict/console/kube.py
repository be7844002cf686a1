"""The console's access to the Kubernetes API, with the user's own kubeconfig and context:
every read and write is theirs, never the operator's. API refusals become ConsoleErrors, one
line a user can act on."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from batchpredict.api.v1alpha1 import GROUP, PLURAL, VERSION
from batchpredict.api.v1alpha1.report import REPORT_PLURAL
from batchpredict.reconcile.naming import LABEL_RUN

CRD_NAME = f"{PLURAL}.{GROUP}"
NOT_FOUND, FORBIDDEN, UNAUTHORIZED = 404, 403, 401


class ConsoleError(Exception):
    """What went wrong, in one line; the command exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Target:
    """Where the user points the command: kubeconfig, context, namespace (-n / -A)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    all_namespaces: bool = False


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)


@contextlib.contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Turn the API server's refusals (and an unreachable server) into one-line errors."""
    try:
        yield
    except ApiException as error:
        if error.status == NOT_FOUND:
            raise ConsoleError(f"{what}: not found") from None
        if error.status in {FORBIDDEN, UNAUTHORIZED}:
            raise ConsoleError(f"{what}: {_api_message(error)}") from None
        raise ConsoleError(f"{what}: {error.status} {_api_message(error)}") from None
    except (aiohttp.ClientError, OSError) as error:
        raise ConsoleError(f"{what}: cannot reach the API server: {error}") from None


class Kube:
    """The few API calls the console makes, in the namespace the user chose."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)

    # --- runs -------------------------------------------------------------------------------
    async def get_run(self, name: str) -> dict[str, Any]:
        if name == "@latest":
            return await self.latest_run()
        what = f'batchprediction "{name}" in namespace "{self.namespace}"'
        with api_errors(what):
            found = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        return dict(found)

    async def latest_run(self) -> dict[str, Any]:
        runs = await self.list_runs(all_namespaces=False)
        if not runs:
            raise ConsoleError(f'no batchprediction in namespace "{self.namespace}"')
        return max(runs, key=lambda r: str(r["metadata"].get("creationTimestamp", "")))

    async def list_runs(self, *, all_namespaces: bool) -> list[dict[str, Any]]:
        where = "all namespaces" if all_namespaces else f'namespace "{self.namespace}"'
        with api_errors(f"list batchpredictions in {where}"):
            if all_namespaces:
                found = await self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            else:
                found = await self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL
                )
        return list(found.get("items", []))

    async def create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        namespace = body.get("metadata", {}).get("namespace") or self.namespace
        name = body.get("metadata", {}).get("name", "?")
        with api_errors(f'create batchprediction "{name}" in namespace "{namespace}"'):
            created = await self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body
            )
        return dict(created)

    async def patch_run(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        what = f'batchprediction "{name}" in namespace "{self.namespace}"'
        with api_errors(what):
            # A merge patch (the generated method's hints omit `_content_type`; it takes it).
            send: Any = self.custom.patch_namespaced_custom_object
            patched = await send(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                patch,
                _content_type="application/merge-patch+json",
            )
        return dict(patched)

    # --- what a run is made of ----------------------------------------------------------------
    def _selector(self, run: dict[str, Any]) -> str:
        return f"{LABEL_RUN}={run['metadata']['uid']}"

    async def reports(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        """The run's shard reports; none when the user may not read them (optional detail)."""
        with contextlib.suppress(ConsoleError), api_errors("shard reports"):
            found = await self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, REPORT_PLURAL, label_selector=self._selector(run)
            )
            return list(found.get("items", []))
        return []

    async def jobs(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        with contextlib.suppress(ConsoleError), api_errors("jobs"):
            found = await self.batch.list_namespaced_job(
                self.namespace, label_selector=self._selector(run)
            )
            return [self.api.sanitize_for_serialization(j) for j in found.items]
        return []

    async def pods(self, run: dict[str, Any], selector: str = "") -> list[dict[str, Any]]:
        labels = ",".join(s for s in (self._selector(run), selector) if s)
        with api_errors(f'pods of batchprediction "{run["metadata"]["name"]}"'):
            found = await self.core.list_namespaced_pod(self.namespace, label_selector=labels)
        return [self.api.sanitize_for_serialization(p) for p in found.items]

    async def log(self, pod: str, container: str) -> str:
        with api_errors(f'logs of pod "{pod}"'):
            # Raw bytes: the client would parse a log that is one JSON line as an object.
            response: Any = await self.core.read_namespaced_pod_log(
                pod, self.namespace, container=container, _preload_content=False
            )
            async with response:
                return str((await response.read()).decode(errors="replace"))

    async def follow_log(self, pod: str, container: str) -> AsyncIterator[str]:
        with api_errors(f'logs of pod "{pod}"'):
            response: Any = await self.core.read_namespaced_pod_log(
                pod, self.namespace, container=container, follow=True, _preload_content=False
            )
            async with response:
                async for line in response.content:
                    yield line.decode(errors="replace").rstrip("\n")

    async def crd(self) -> dict[str, Any] | None:
        with contextlib.suppress(ConsoleError), api_errors("the CRD"):
            found = await client.ApiextensionsV1Api(self.api).read_custom_resource_definition(
                CRD_NAME
            )
            return dict(self.api.sanitize_for_serialization(found))
        return None

    async def operator_deployments(self) -> list[dict[str, Any]]:
        """The operator's Deployments the user may see (the chart labels them)."""
        selector = "app.kubernetes.io/name=batchpredict"
        with contextlib.suppress(ConsoleError), api_errors("operator deployments"):
            apps = client.AppsV1Api(self.api)
            found = await apps.list_deployment_for_all_namespaces(label_selector=selector)
            return [self.api.sanitize_for_serialization(d) for d in found.items]
        return []


@contextlib.asynccontextmanager
async def connect(target: Target) -> AsyncIterator[Kube]:
    """An API client from the user's kubeconfig (KUBECONFIG, ~/.kube/config) and context."""
    configuration = client.Configuration()
    try:
        loader = await config.load_kube_config(
            config_file=target.kubeconfig,
            context=target.context,
            client_configuration=configuration,
            persist_config=False,
        )
        namespace = target.namespace or (loader.current_context or {}).get("context", {}).get(
            "namespace"
        )
    except (ConfigException, OSError) as error:
        raise ConsoleError(f"cannot load the kubeconfig: {error}") from None
    api = client.ApiClient(configuration=configuration)
    try:
        yield Kube(api, namespace or "default")
    finally:
        await api.close()
