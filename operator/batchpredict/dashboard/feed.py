"""One watch of BatchPredictions shared by every open page: each browser gets a snapshot of
the table, then each change as it happens (server-sent events). Pages never poll the API server
per run; the dashboard holds one list and one watch, whatever the number of pages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from batchpredict.dashboard.kube import Kube, KubeError
from batchpredict.dashboard.views import run_row

log = logging.getLogger(__name__)
RETRY_SECONDS = 2.0
GONE = 410


class RunFeed:
    """The rows of the runs table kept current by a watch; `subscribe()` for the changes."""

    def __init__(self, kube: Kube, namespace: str | None, fallback_namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.fallback_namespace = fallback_namespace
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.error: str | None = None
        self.ready = asyncio.Event()
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dashboard-feed")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    def snapshot(self) -> list[dict[str, Any]]:
        return sorted(self.rows.values(), key=lambda r: (r["namespace"], r["name"]))

    def _publish(self, message: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # A page that stopped reading: it reloads the snapshot when it reconnects.
                self._subscribers.discard(queue)

    async def _run(self) -> None:
        while True:
            try:
                await self._list_and_watch()
            except asyncio.CancelledError:
                raise
            except KubeError as error:
                if error.status == 403 and self.namespace is None:
                    # Not allowed to list every namespace: the kubeconfig's own namespace.
                    self.namespace = self.fallback_namespace
                    log.info("dashboard: listing runs of namespace %s only", self.namespace)
                    continue
                self.error = error.message
                self._publish({"type": "error", "message": error.message})
                self.ready.set()
            except Exception as error:  # noqa: BLE001 - a dropped watch is retried, whatever broke it
                log.warning("dashboard: watch of runs broke: %s", error)
            await asyncio.sleep(RETRY_SECONDS)

    async def _list_and_watch(self) -> None:
        listed = await self.kube.list_runs(self.namespace)
        rows = {}
        for bp in listed.get("items", []):
            row = run_row(bp)
            rows[(row["namespace"], row["name"])] = row
        self.rows, self.error = rows, None
        self.ready.set()
        self._publish({"type": "snapshot", "runs": self.snapshot()})
        version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
        while True:
            async for kind, obj in self.kube.watch_runs(self.namespace, version):
                if kind == "ERROR":
                    if obj.get("code") == GONE:
                        return  # relist
                    continue
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                row = run_row(obj)
                key = (row["namespace"], row["name"])
                if kind == "DELETED":
                    self.rows.pop(key, None)
                    self._publish({"type": "deleted", "run": row})
                else:
                    self.rows[key] = row
                    self._publish({"type": "update", "run": row})
