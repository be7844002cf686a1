"""Progress of one shard, written as a BatchPredictionShard object (or a JSON file).

Only the worker writes its report (DESIGN.md section 5): at most one write per
`interval` seconds while counts change, and a final write on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Protocol

from batchpredict.api.v1alpha1.base import API_VERSION, GROUP, VERSION
from batchpredict.api.v1alpha1.report import (
    LABEL_NAME,
    LABEL_ROUND,
    LABEL_RUN,
    LABEL_SHARD,
    REPORT_PLURAL,
    BatchPredictionShard,
    ShardProgress,
    ShardReportSpec,
    report_name,
)
from batchpredict.api.v1alpha1.status import FailedItem
from batchpredict.io.layout import OutputLayout
from batchpredict.names import fit

log = logging.getLogger(__name__)
FAILED_SAMPLE = 20
# The last report write is tried this often (seconds between tries grow: 1, 2, 4...); when
# it still fails, the operator reads the shard's counts from its pod's exit summary.
FINAL_WRITE_ATTEMPTS = 4


class ReportSink(Protocol):
    async def write(self, body: dict[str, Any]) -> None: ...
    async def close(self) -> None: ...


class FileSink:
    """Writes the report JSON to a file (tests, and runs outside Kubernetes)."""

    def __init__(self, layout: OutputLayout, path: str) -> None:
        self.layout, self.path = layout, path

    async def write(self, body: dict[str, Any]) -> None:
        await asyncio.to_thread(self.layout.write_json, self.path, body)

    async def close(self) -> None:
        return None


class ApiSink:
    """Creates, then merge-patches, the BatchPredictionShard object."""

    def __init__(self, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        self._api: Any = None
        self._created = False

    async def _client(self) -> Any:
        if self._api is None:
            from batchpredict.incluster import api_client  # noqa: PLC0415 (API mode only)

            self._api = await api_client()
        from kubernetes_asyncio.client import CustomObjectsApi  # noqa: PLC0415

        return CustomObjectsApi(self._api)

    async def write(self, body: dict[str, Any]) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException  # noqa: PLC0415

        api = await self._client()
        args = (GROUP, VERSION, self.namespace, REPORT_PLURAL)
        if not self._created:
            try:
                await api.create_namespaced_custom_object(*args, body)
            except ApiException as error:
                if error.status != 409:  # 409: a previous attempt of this pod created it
                    raise
            else:
                self._created = True
                return
            self._created = True
        patch = {"spec": body["spec"], "progress": body["progress"]}
        await api.patch_namespaced_custom_object(
            *args, self.name, patch, _content_type="application/merge-patch+json"
        )

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()


class ProgressReporter:
    """Counts committed items and writes the report at a bounded rate."""

    def __init__(
        self,
        sink: ReportSink | None,
        *,
        name: str,
        namespace: str,
        run_uid: str,
        round_: int,
        shard: int,
        interval: float,
    ) -> None:
        self.sink = sink
        self.interval = interval
        self.spec = ShardReportSpec(
            batch_prediction=name, run_uid=run_uid, round=round_, shard=shard
        )
        self.metadata: dict[str, object] = {
            "name": report_name(name, run_uid, round_, shard),
            "namespace": namespace,
            "labels": {
                LABEL_RUN: run_uid,
                LABEL_NAME: fit(name),
                LABEL_ROUND: str(round_),
                LABEL_SHARD: str(shard),
            },
            # The report goes with its run; the operator counts it only through this.
            "ownerReferences": [
                {"apiVersion": API_VERSION, "kind": "BatchPrediction", "name": name, "uid": run_uid}
            ],
        }
        self.items_total = 0
        self.succeeded = self.failed = self.retryable = 0
        self.counts: Counter[str] = Counter()
        self.retryable_counts: Counter[str] = Counter()
        self.waiting_reason: str | None = None
        self.waiting_message: str | None = None
        self.sample: list[FailedItem] = []
        self.started = datetime.now(UTC)
        self._t0 = time.monotonic()
        self.done_here = 0  # items committed by this pod (throughput)
        self._dirty = True
        self._task: asyncio.Task[None] | None = None

    def resume(self, succeeded: int, failures: list[dict[str, Any]]) -> None:
        """Counts of chunks a previous attempt committed."""
        self._count(succeeded, failures)

    def commit(self, succeeded: int, failed: int, failures: list[dict[str, Any]]) -> None:
        del failed  # == len(failures); kept in the callback's signature for clarity
        self._count(succeeded, failures)
        self.done_here += succeeded + len(failures)

    def _count(self, succeeded: int, failures: list[dict[str, Any]]) -> None:
        self.succeeded += succeeded
        self.failed += len(failures)
        for failure in failures:
            self.counts[failure["code"]] += 1
            if failure["retryable"]:
                self.retryable += 1
                self.retryable_counts[failure["code"]] += 1
            if len(self.sample) < FAILED_SAMPLE:
                self.sample.append(FailedItem.model_validate(failure))
        self._dirty = True

    def waiting(self, reason: str | None, message: str | None = None) -> None:
        """The pod waits for a dependency (None: not any more); the report says so."""
        if (reason, message) != (self.waiting_reason, self.waiting_message):
            self.waiting_reason, self.waiting_message = reason, message
            self._dirty = True

    def snapshot(self, finished: bool = False, message: str | None = None) -> BatchPredictionShard:
        elapsed = time.monotonic() - self._t0
        progress = ShardProgress(
            items_total=self.items_total,
            succeeded=self.succeeded,
            failed=self.failed,
            retryable_failed=self.retryable,
            items_per_second=round(self.done_here / elapsed, 2) if elapsed > 0 else 0.0,
            started_at=self.started,
            updated_at=datetime.now(UTC),
            finished=finished,
            failure_counts=dict(self.counts),
            retryable_counts=dict(self.retryable_counts),
            failed_sample=list(self.sample),
            message=message or self.waiting_message,
            waiting_reason=self.waiting_reason,
        )
        return BatchPredictionShard(metadata=self.metadata, spec=self.spec, progress=progress)

    async def _write(self, finished: bool = False, message: str | None = None) -> bool:
        if self.sink is None:
            return True
        self._dirty = False
        body = self.snapshot(finished, message).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        try:
            await self.sink.write(body)
        except Exception as error:  # noqa: BLE001 (a missed report must not fail the shard)
            self._dirty = True
            log.warning("could not write the progress report: %s", error)
            return False
        return True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._dirty:
                await self._write()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self, finished: bool, message: str | None = None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for attempt in range(FINAL_WRITE_ATTEMPTS):
            if await self._write(finished, message):
                break
            if attempt + 1 < FINAL_WRITE_ATTEMPTS:
                await asyncio.sleep(2**attempt)
        if self.sink is not None:
            await self.sink.close()
