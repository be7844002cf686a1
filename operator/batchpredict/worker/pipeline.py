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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from batchpredict.api.v1alpha1.execution import BackoffSpec
from batchpredict.io.layout import OutputLayout
from batchpredict.io.readers import ItemBatch, take
from batchpredict.triton.client import TritonClient
from batchpredict.triton.errors import RequestError
from batchpredict.triton.tensors import OutputBinding
from batchpredict.worker.chunks import ID_COLUMN, Chunk, write_chunk
from batchpredict.worker.preprocess import Prepared, Preprocessor, Request
from batchpredict.worker.tuning import ConcurrencyTuner, Limiter

log = logging.getLogger(__name__)
READ_ROWS = 16384


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
    # Tune concurrency (from `concurrency` up to `max_concurrency`) when the user set none.
    adaptive: bool
    max_concurrency: int
    round: int
    shard: int


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
        self.output_names = list(dict.fromkeys(o.tensor for o in outputs))
        self.tuner = ConcurrencyTuner(
            settings.concurrency, settings.max_concurrency, adaptive=settings.adaptive
        )
        self._chunks: dict[int, Chunk] = {}
        self._commits: set[asyncio.Task[None]] = set()
        # Errors of finished request/commit tasks: the shard is broken, stop and report.
        self._crashed: list[BaseException] = []
        self._work_array: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._work: Sequence[int] = range(0)

    async def run(
        self, work: Sequence[int], todo: list[int], read: Callable[..., Iterator[ItemBatch]]
    ) -> None:
        """Process chunks `todo` of the shard's `work` (positions, in order)."""
        if not todo:
            return
        self._plan_chunks(work, todo)
        loop = asyncio.get_running_loop()
        # Batches read ahead: enough to keep the largest in-flight level busy, bounded memory.
        queue: asyncio.Queue[Prepared | None] = asyncio.Queue(maxsize=4)
        stop = threading.Event()
        producer = asyncio.create_task(
            asyncio.to_thread(self._produce, read, work, todo, loop, queue, stop)
        )
        slots = Limiter(self.tuner)
        requests: set[asyncio.Task[None]] = set()
        try:
            while (prepared := await queue.get()) is not None:
                self._record_errors(prepared)
                for request in prepared.requests:
                    await slots.acquire()
                    self._raise_crash()
                    task = asyncio.create_task(self._resolve(prepared, request, slots))
                    self._track(task, requests)
            await producer
            await asyncio.gather(*requests)
            while self._commits:
                await asyncio.gather(*list(self._commits))
            self._raise_crash()
        finally:
            stop.set()
            for task in (*requests, *self._commits):
                task.cancel()
        unfinished = [c.number for c in self._chunks.values() if c.resolved < c.expected]
        if unfinished:
            raise RuntimeError(f"chunks {unfinished} did not receive every item from the dataset")

    def _raise_crash(self) -> None:
        if self._crashed:
            raise self._crashed[0]

    def _plan_chunks(self, work: Sequence[int], todo: list[int]) -> None:
        size = self.settings.chunk_items
        self._work = work
        if not isinstance(work, range):
            self._work_array = np.asarray(work, dtype=np.int64)
        for c in todo:
            self._chunks[c] = Chunk(c, len(work[c * size : (c + 1) * size]))

    def _produce(  # noqa: PLR0917 (runs in a thread: everything it needs, explicitly)
        self,
        read: Callable[..., Iterator[ItemBatch]],
        work: Sequence[int],
        todo: list[int],
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Prepared | None],
        stop: threading.Event,
    ) -> None:
        """Reading thread: read the items of chunks `todo`, prepare requests, queue them."""
        size = self.settings.chunk_items
        first = int(work[todo[0] * size])
        last = int(work[min(len(work), (todo[-1] + 1) * size) - 1])
        wanted = None
        if not (isinstance(work, range) and todo == list(range(todo[0], todo[-1] + 1))):
            wanted = np.concatenate(
                [np.asarray(work[c * size : (c + 1) * size], dtype=np.int64) for c in todo]
            )
        # Read many requests' worth at once: fewer hand-overs between this thread and the
        # event loop, which contend for the GIL.
        rows = self.settings.batch_size * max(1, READ_ROWS // self.settings.batch_size)
        try:
            for batch in read(first, last + 1, wanted=wanted, batch_rows=rows):
                if stop.is_set():
                    return
                for part, order in self._split_by_chunk(batch):
                    prepared = self.preprocessor.prepare(part)
                    prepared.order = order
                    self._put(loop, queue, prepared, stop)
        finally:
            self._put(loop, queue, None, stop)

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

    def _order(self, positions: NDArray[np.int64]) -> NDArray[np.int64]:
        """Index of each position in the work list (sorted), vectorized."""
        work = self._work
        if isinstance(work, range):
            return positions - work.start
        return np.searchsorted(self._work_array, positions).astype(np.int64)

    def _split_by_chunk(self, batch: ItemBatch) -> Iterator[tuple[ItemBatch, NDArray[np.int64]]]:
        order = self._order(batch.positions)
        chunks = order // self.settings.chunk_items
        if chunks[0] == chunks[-1]:
            yield batch, order
            return
        for c in np.unique(chunks):
            keep = np.flatnonzero(chunks == c)
            yield take(batch, keep), order[keep]

    def _track(self, task: asyncio.Task[None], tasks: set[asyncio.Task[None]]) -> None:
        tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if not task.cancelled() and (error := task.exception()) is not None:
                self._crashed.append(error)

        task.add_done_callback(done)

    @staticmethod
    def _order_of(prepared: Prepared) -> NDArray[np.int64]:
        if prepared.order is None:
            raise RuntimeError("a prepared batch has no work-list order")
        return prepared.order

    def _chunk_of(self, prepared: Prepared) -> Chunk:
        return self._chunks[int(self._order_of(prepared)[0]) // self.settings.chunk_items]

    def _failure(  # noqa: PLR0917 (one failure record's fields)
        self, batch: ItemBatch, index: int, code: str, message: str, attempts: int, retryable: bool
    ) -> dict[str, Any]:
        return {
            "id": batch.id_at(index),
            "position": int(batch.positions[index]),
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
        self, prepared: Prepared, request: Request, slots: Limiter | None = None
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
                    for i in request.indices.tolist()
                ]
                self._resolved(chunk, failures=failures)
            else:
                self._succeeded(chunk, prepared, request.indices, outputs)
        finally:
            if slots is not None:
                await slots.release(len(request.indices))

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
        self,
        chunk: Chunk,
        prepared: Prepared,
        indices: NDArray[np.intp],
        outputs: dict[str, NDArray[Any]],
    ) -> None:
        batch = prepared.batch
        n = len(indices)
        rows = {name: array.shape[0] if array.ndim else 0 for name, array in outputs.items()}
        if any(count != n for count in rows.values()):
            message = f"the model returned {rows} rows for {n} items"
            failures = [
                self._failure(batch, i, "BAD_OUTPUT", message, 1, False) for i in indices.tolist()
            ]
            self._resolved(chunk, failures=failures)
            return
        first = int(indices[0])
        # Requests are usually contiguous slices of their batch: zero-copy Arrow slices.
        contiguous = int(indices[-1]) - first + 1 == n

        def pick(values: pa.Array) -> pa.Array:
            return values.slice(first, n) if contiguous else values.take(pa.array(indices))

        data: dict[str, Any] = {ID_COLUMN: pick(batch.ids)}
        for name, values in prepared.carried.items():
            if name == ID_COLUMN:
                continue
            if isinstance(values, pa.Array):
                data[name] = pick(values)
            else:
                data[name] = [values[i] for i in indices.tolist()]
        self._resolved(
            chunk, table=pa.table(data), outputs=outputs, order=self._order_of(prepared)[indices]
        )

    def _resolved(
        self,
        chunk: Chunk,
        *,
        failures: list[dict[str, Any]] | None = None,
        table: pa.Table | None = None,
        outputs: dict[str, NDArray[Any]] | None = None,
        order: NDArray[Any] | None = None,
    ) -> None:
        if failures:
            chunk.failures.extend(failures)
            chunk.resolved += len(failures)
        if table is not None and order is not None and outputs is not None:
            chunk.pieces.append(table)
            chunk.outputs.append(outputs)
            chunk.orders.append(order)
            chunk.resolved += table.num_rows
        if chunk.resolved >= chunk.expected:
            task = asyncio.create_task(self._commit(chunk))
            self._track(task, self._commits)

    async def _commit(self, chunk: Chunk) -> None:
        del self._chunks[chunk.number]
        succeeded = await asyncio.to_thread(self._write_chunk, chunk)
        self.on_commit(succeeded, len(chunk.failures), chunk.failures)

    def _write_chunk(self, chunk: Chunk) -> int:
        s = self.settings
        return write_chunk(
            self.layout,
            chunk,
            self.outputs,
            self.output_names,
            round_=s.round,
            shard=s.shard,
            output_format=s.output_format,
        )
