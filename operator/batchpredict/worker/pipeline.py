"""The shard pipeline: read and preprocess in a thread, keep `concurrency` requests in flight,
commit each chunk atomically once every item in it has an outcome.

Flow control: a bounded queue between the reading thread and the event loop keeps memory flat
whatever the shard size; requests are bounded by a semaphore.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from batchpredict.api.v1alpha1.spec import BackoffSpec
from batchpredict.io.layout import OutputLayout
from batchpredict.io.readers import ItemBatch, take
from batchpredict.io.writers import encode_jsonl, encode_table
from batchpredict.triton.client import TritonClient
from batchpredict.triton.errors import RequestError
from batchpredict.triton.tensors import OutputBinding
from batchpredict.worker.postprocess import output_columns
from batchpredict.worker.preprocess import Prepared, Preprocessor, Request

log = logging.getLogger(__name__)
ID_COLUMN = "id"


@dataclass(frozen=True)
class Settings:
    model: str
    version: str | None
    batch_size: int
    concurrency: int
    attempts: int
    backoff: BackoffSpec
    chunk_items: int
    output_format: str
    round: int
    shard: int


@dataclass
class Chunk:
    """Outcomes gathered for one output chunk until every item has one."""

    number: int
    expected: int
    resolved: int = 0
    pieces: list[pa.Table] = field(default_factory=list)
    orders: list[NDArray[Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


OnCommit = Callable[[int, int, list[dict[str, Any]]], None]


class ShardPipeline:
    def __init__(
        self,
        *,
        client: TritonClient,
        preprocessor: Preprocessor,
        outputs: list[OutputBinding],
        settings: Settings,
        layout: OutputLayout,
        on_commit: OnCommit,
    ) -> None:
        self.client = client
        self.preprocessor = preprocessor
        self.outputs = outputs
        self.settings = settings
        self.layout = layout
        self.on_commit = on_commit
        self.output_names = [o.tensor for o in outputs]
        self._chunks: dict[int, Chunk] = {}
        self._commits: set[asyncio.Task[None]] = set()
        self._index: dict[int, int] = {}
        self._work: Sequence[int] = range(0)

    async def run(
        self, work: Sequence[int], todo: list[int], read: Callable[..., Iterator[ItemBatch]]
    ) -> None:
        """Process chunks `todo` of the shard's `work` (positions, in order)."""
        if not todo:
            return
        size = self.settings.chunk_items
        self._work = work
        if not isinstance(work, range):
            self._index = {p: k for k, p in enumerate(work)}
        for c in todo:
            self._chunks[c] = Chunk(c, len(work[c * size : (c + 1) * size]))
        positions = [p for c in todo for p in work[c * size : (c + 1) * size]]
        contiguous = isinstance(work, range) and todo == list(range(todo[0], todo[-1] + 1))
        wanted = None if contiguous else set(positions)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Prepared | None] = asyncio.Queue(maxsize=2 * self.settings.concurrency)
        stop = threading.Event()

        def produce() -> None:
            try:
                batches = read(
                    positions[0],
                    positions[-1] + 1,
                    wanted=wanted,
                    batch_rows=self.settings.batch_size,
                )
                for batch in batches:
                    if stop.is_set():
                        return
                    for part in self._split_by_chunk(batch):
                        self._put(loop, queue, self.preprocessor.prepare(part), stop)
            finally:
                self._put(loop, queue, None, stop)

        producer = asyncio.create_task(asyncio.to_thread(produce))
        slots = asyncio.Semaphore(self.settings.concurrency)
        requests: set[asyncio.Task[None]] = set()
        try:
            while (prepared := await queue.get()) is not None:
                self._record_errors(prepared)
                for request in prepared.requests:
                    await slots.acquire()
                    task = asyncio.create_task(self._resolve(prepared, request, slots))
                    requests.add(task)
                    task.add_done_callback(requests.discard)
            await producer
            await asyncio.gather(*requests)
            while self._commits:
                await asyncio.gather(*list(self._commits))
        finally:
            stop.set()
            for task in (*requests, *self._commits):
                task.cancel()
        unfinished = [c.number for c in self._chunks.values() if c.resolved < c.expected]
        if unfinished:
            raise RuntimeError(f"chunks {unfinished} did not receive every item from the dataset")

    @staticmethod
    def _put(
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Prepared | None],
        item: Prepared | None,
        stop: threading.Event,
    ) -> None:
        future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while not stop.is_set():
            try:
                future.result(timeout=0.5)
            except TimeoutError:
                continue
            return
        future.cancel()

    def _k(self, position: int) -> int:
        work = self._work
        return position - work.start if isinstance(work, range) else self._index[position]

    def _split_by_chunk(self, batch: ItemBatch) -> Iterator[ItemBatch]:
        size = self.settings.chunk_items
        first, last = self._k(batch.positions[0]) // size, self._k(batch.positions[-1]) // size
        if first == last:
            yield batch
            return
        chunks = [self._k(p) // size for p in batch.positions]
        for c in dict.fromkeys(chunks):
            yield take(batch, [i for i, ci in enumerate(chunks) if ci == c])

    def _chunk_of(self, prepared: Prepared) -> Chunk:
        return self._chunks[self._k(prepared.batch.positions[0]) // self.settings.chunk_items]

    def _failure(  # noqa: PLR0917 (one failure record's fields)
        self, batch: ItemBatch, index: int, code: str, message: str, attempts: int, retryable: bool
    ) -> dict[str, Any]:
        return {
            "id": batch.ids[index],
            "position": batch.positions[index],
            "shard": self.settings.shard,
            "round": self.settings.round,
            "code": code,
            "message": message,
            "attempts": attempts,
            "retryable": retryable,
        }

    def _record_errors(self, prepared: Prepared) -> None:
        if prepared.errors:
            failures = [
                self._failure(prepared.batch, i, code, message, 0, retryable=False)
                for i, (code, message) in sorted(prepared.errors.items())
            ]
            self._resolved(self._chunk_of(prepared), failures=failures)

    async def _resolve(
        self, prepared: Prepared, request: Request, slots: asyncio.Semaphore | None = None
    ) -> None:
        try:
            outputs, error, attempts = await self._infer(request.tensors)
            if error is not None and not error.transient and len(request.indices) > 1:
                # Split to isolate the item at fault; its neighbours still succeed.
                half = len(request.indices) // 2
                for part in (slice(None, half), slice(half, None)):
                    sub = Request(
                        request.indices[part], {k: v[part] for k, v in request.tensors.items()}
                    )
                    await self._resolve(prepared, sub)
                return
            chunk = self._chunk_of(prepared)
            if error is not None:
                failures = [
                    self._failure(
                        prepared.batch, i, error.code, error.message, attempts, error.transient
                    )
                    for i in request.indices
                ]
                self._resolved(chunk, failures=failures)
            else:
                self._succeeded(chunk, prepared, request.indices, outputs)
        finally:
            if slots is not None:
                slots.release()

    async def _infer(
        self, tensors: dict[str, NDArray[Any]]
    ) -> tuple[dict[str, NDArray[Any]], RequestError | None, int]:
        inputs = {b.tensor: (tensors[b.tensor], b.datatype) for b in self.preprocessor.inputs}
        backoff = self.settings.backoff
        for attempt in range(1, self.settings.attempts + 1):
            try:
                outputs = await self.client.infer(
                    self.settings.model, self.settings.version, inputs, self.output_names
                )
            except RequestError as error:
                if not error.transient or attempt == self.settings.attempts:
                    return {}, error, attempt
                delay = min(
                    backoff.max_seconds, backoff.initial_seconds * backoff.factor ** (attempt - 1)
                )
                await asyncio.sleep(delay * (1 + backoff.jitter * random.random()))  # noqa: S311
            else:
                return outputs, None, attempt
        raise AssertionError("unreachable")  # pragma: no cover

    def _succeeded(
        self, chunk: Chunk, prepared: Prepared, indices: list[int], outputs: dict[str, NDArray[Any]]
    ) -> None:
        batch = prepared.batch
        n = len(indices)
        try:
            columns = output_columns(self.outputs, outputs, n)
        except ValueError as error:
            failures = [
                self._failure(
                    batch,
                    i,
                    "BAD_OUTPUT",
                    f"model output does not fit: {error}",
                    1,
                    retryable=False,
                )
                for i in indices
            ]
            self._resolved(chunk, failures=failures)
            return
        data: dict[str, Any] = {ID_COLUMN: pa.array([batch.ids[i] for i in indices], pa.string())}
        for name, values in prepared.carried.items():
            if name not in columns and name != ID_COLUMN:
                data[name] = [values[i] for i in indices]
        data.update(columns)
        table = pa.table(data)
        order = np.fromiter((self._k(batch.positions[i]) for i in indices), np.int64, n)
        self._resolved(chunk, table=table, order=order)

    def _resolved(
        self,
        chunk: Chunk,
        *,
        failures: list[dict[str, Any]] | None = None,
        table: pa.Table | None = None,
        order: NDArray[Any] | None = None,
    ) -> None:
        if failures:
            chunk.failures.extend(failures)
            chunk.resolved += len(failures)
        if table is not None and order is not None:
            chunk.pieces.append(table)
            chunk.orders.append(order)
            chunk.resolved += table.num_rows
        if chunk.resolved >= chunk.expected:
            task = asyncio.create_task(self._commit(chunk))
            self._commits.add(task)
            task.add_done_callback(self._commits.discard)

    async def _commit(self, chunk: Chunk) -> None:
        del self._chunks[chunk.number]
        succeeded = await asyncio.to_thread(self._write_chunk, chunk)
        self.on_commit(succeeded, len(chunk.failures), chunk.failures)

    def _write_chunk(self, chunk: Chunk) -> int:
        s, layout = self.settings, self.layout
        failures = sorted(chunk.failures, key=lambda f: int(f["position"]))
        layout.write_atomic(
            layout.failures_chunk(s.round, s.shard, chunk.number), encode_jsonl(failures)
        )
        if chunk.pieces:
            table = pa.concat_tables(chunk.pieces, promote_options="default")
            table = table.take(pa.array(np.argsort(np.concatenate(chunk.orders), kind="stable")))
        else:
            table = pa.table({ID_COLUMN: pa.array([], pa.string())})
        path = layout.predictions_chunk(s.round, s.shard, chunk.number, s.output_format)
        layout.write_atomic(path, encode_table(table, s.output_format))
        log.debug("committed chunk %d (%d rows)", chunk.number, table.num_rows)
        return int(table.num_rows)


def commit_counts(started: float, done: int) -> float:
    """Items per second since `started` (monotonic)."""
    elapsed = time.monotonic() - started
    return done / elapsed if elapsed > 0 else 0.0
