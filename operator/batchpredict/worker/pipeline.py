"""The shard pipeline: read, preprocess and encode requests in a thread (per-item work such as
image decoding in a pool over the pod's cores); `concurrency` lanes on the event loop each keep
one request in flight; commit each chunk atomically once every item in it has an outcome.

Flow control: a bounded queue between the reading thread and the event loop keeps memory flat
whatever the shard size. The event loop does as little as it can per request (send, check,
file the answer): for a fast model it is what limits throughput.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchpredict.api.v1alpha1.execution import BackoffSpec
from batchpredict.io.layout import OutputLayout
from batchpredict.io.readers import ItemBatch
from batchpredict.triton.client import TritonClient
from batchpredict.triton.errors import RequestError
from batchpredict.triton.tensors import OutputBinding
from batchpredict.worker.chunks import Chunk, Piece, write_chunk
from batchpredict.worker.preprocess import Prepared, Preprocessor, Request
from batchpredict.worker.tuning import ConcurrencyTuner

log = logging.getLogger(__name__)
# Items per read: many requests' worth, for fewer hand-overs between the reading thread and
# the event loop (they contend for the GIL), but at most READ_BYTES of input tensors: the queue
# holds a few reads, and images of 600 KB would otherwise take gigabytes.
READ_ROWS = 16384
READ_BYTES = 64 * 1024 * 1024


def read_rows(batch_size: int, item_bytes: int | None) -> int:
    """Rows per read: whole requests, up to READ_ROWS items and READ_BYTES of input; one
    request when items vary in size (`item_bytes` None: BYTES or variable dimensions), whose
    requests cost far more than a hand-over anyway."""
    if item_bytes is None:
        return batch_size
    per_read = min(READ_ROWS, READ_BYTES // max(1, item_bytes))
    return batch_size * max(1, per_read // batch_size)


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


class RequestFeed:
    """Hands the lanes the queued batches' requests, one at a time, in order."""

    def __init__(
        self,
        queue: asyncio.Queue[Prepared | None],
        on_batch: Callable[[Prepared], None],
    ) -> None:
        self._queue = queue
        self._on_batch = on_batch
        self._pending: deque[tuple[Prepared, Request]] = deque()
        self._refill = asyncio.Lock()
        self._exhausted = False

    async def next(self) -> tuple[Prepared, Request] | None:
        while not self._pending:
            if self._exhausted:
                return None
            async with self._refill:  # one lane waits for the next batch, the others on it
                if self._pending or self._exhausted:
                    continue
                prepared = await self._queue.get()
                if prepared is None:
                    self._exhausted = True
                    continue
                self._on_batch(prepared)
                self._pending.extend((prepared, r) for r in prepared.requests)
        return self._pending.popleft()


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
        self._lanes: dict[int, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._work_array: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._work: Sequence[int] = range(0)
        # CPU seconds of the reading thread and of chunk commits: with the event loop's, where
        # a shard's CPU goes (the shard manifest's cpuSeconds).
        self.cpu_seconds = {"reading": 0.0, "writing": 0.0}

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
        feed = RequestFeed(queue, self._record_errors)
        try:
            # A failing lane, commit or reader cancels the rest: the shard is broken.
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(
                    asyncio.to_thread(self._produce, read, work, todo, loop, queue, stop)
                )
                self._start_lanes(feed)
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        finally:
            stop.set()
            self._group = None
        unfinished = [c.number for c in self._chunks.values() if c.resolved < c.expected]
        if unfinished:
            raise RuntimeError(f"chunks {unfinished} did not receive every item from the dataset")

    def _start_lanes(self, feed: RequestFeed) -> None:
        """Run lanes 0 .. tuner.limit-1 (the tuner may have raised the limit)."""
        if self._group is None or len(self._lanes) >= self.tuner.limit:
            return
        for number in range(self.tuner.limit):
            if number not in self._lanes:
                self._lanes[number] = self._group.create_task(self._lane(number, feed))

    async def _lane(self, number: int, feed: RequestFeed) -> None:
        """One request in flight at a time; lanes above the tuner's limit stop."""
        try:
            while number < self.tuner.limit and (item := await feed.next()) is not None:
                prepared, request = item
                await self._resolve(prepared, request)
                self.tuner.completed(len(request.indices))
                self._start_lanes(feed)
        finally:
            del self._lanes[number]

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
        inputs = self.preprocessor.inputs
        fixed = all(b.fixed_size for b in inputs)
        rows = read_rows(
            self.settings.batch_size, sum(b.item_bytes() for b in inputs) if fixed else None
        )
        started = time.thread_time()
        try:
            batches = read(first, last + 1, wanted=wanted, batch_rows=rows)
            for prepared in self.preprocessor.prepare_all(batches):
                if stop.is_set():
                    return
                # Requests may span two chunks: outcomes are filed by chunk when they come.
                prepared.order = self._order(prepared.batch.positions)
                for request in prepared.requests:
                    request.encoded = self.client.encode(
                        self.settings.model,
                        self.settings.version,
                        self._inputs(request),
                        self.output_names,
                    )
                self._put(loop, queue, prepared, stop)
        finally:
            self.cpu_seconds["reading"] = time.thread_time() - started
            if self.preprocessor.pool.executor_kind:
                self.cpu_seconds["preprocessing"] = self.preprocessor.pool.cpu_seconds
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

    def _by_chunk(
        self, prepared: Prepared, indices: NDArray[np.intp]
    ) -> Iterator[tuple[Chunk, slice]]:
        """The chunks items `indices` (ascending) of `prepared` belong to, each with the
        run of `indices` it holds."""
        if prepared.order is None:
            raise RuntimeError("a prepared batch has no work-list order")
        size = self.settings.chunk_items
        first = int(prepared.order[indices[0]]) // size
        if first == int(prepared.order[indices[-1]]) // size:  # the usual case
            yield self._chunks[first], slice(None)
            return
        chunks = prepared.order[indices] // size
        bounds = [0, *(np.flatnonzero(np.diff(chunks)) + 1).tolist(), len(chunks)]
        for start, stop in itertools.pairwise(bounds):
            yield self._chunks[int(chunks[start])], slice(start, stop)

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
            indices = np.array(sorted(prepared.errors), dtype=np.intp)
            for chunk, run in self._by_chunk(prepared, indices):
                failures = [
                    self._failure(prepared.batch, i, *prepared.errors[i], 0, retryable=False)
                    for i in indices[run].tolist()
                ]
                self._resolved(chunk, failures=failures)

    async def _resolve(self, prepared: Prepared, request: Request) -> None:
        try:
            await self._resolve_request(prepared, request)
        finally:
            request.tensors = {}  # answered: only the outcome is kept until the chunk commits

    async def _resolve_request(self, prepared: Prepared, request: Request) -> None:
        outputs, error, attempts = await self._infer(request)
        if error is not None and not error.transient and len(request.indices) > 1:
            # Split to isolate the item at fault; its neighbours still succeed.
            half = len(request.indices) // 2
            for part in (slice(None, half), slice(half, None)):
                sub = Request(
                    request.indices[part], {k: v[part] for k, v in request.tensors.items()}
                )
                await self._resolve(prepared, sub)
            return
        if error is None:
            if not self.preprocessor.batched:  # one item, answered without a batch dimension
                outputs = {name: array[np.newaxis] for name, array in outputs.items()}
            error = self._check_rows(outputs, len(request.indices))
            attempts = 1 if error else attempts
        for chunk, run in self._by_chunk(prepared, request.indices):
            indices = request.indices[run]
            if error is not None:
                failures = [
                    self._failure(
                        prepared.batch, i, error.code, error.message, attempts, error.transient
                    )
                    for i in indices.tolist()
                ]
                self._resolved(chunk, failures=failures)
            else:
                piece = Piece(prepared, indices, {k: v[run] for k, v in outputs.items()})
                self._resolved(chunk, piece=piece)

    @staticmethod
    def _check_rows(outputs: dict[str, NDArray[Any]], n: int) -> RequestError | None:
        rows = {name: array.shape[0] if array.ndim else 0 for name, array in outputs.items()}
        if any(count != n for count in rows.values()):
            message = f"the model returned {rows} rows for {n} items"
            return RequestError("BAD_OUTPUT", message, transient=False)
        return None

    def _inputs(self, request: Request) -> dict[str, tuple[NDArray[Any], str]]:
        return {b.tensor: (request.tensors[b.tensor], b.datatype) for b in self.preprocessor.inputs}

    async def _infer(
        self, request: Request
    ) -> tuple[dict[str, NDArray[Any]], RequestError | None, int]:
        backoff = self.settings.backoff
        for attempt in range(1, self.settings.attempts + 1):
            try:
                outputs = await self.client.infer(
                    self.settings.model,
                    self.settings.version,
                    self._inputs(request),
                    self.output_names,
                    request.encoded,
                )
            except RequestError as error:
                if not error.transient or attempt == self.settings.attempts:
                    request.encoded = None
                    return {}, error, attempt
                delay = min(
                    backoff.max_seconds, backoff.initial_seconds * backoff.factor ** (attempt - 1)
                )
                await asyncio.sleep(delay * (1 + backoff.jitter * random.random()))  # noqa: S311
            else:
                request.encoded = None  # sent: free its copy of the tensors
                return outputs, None, attempt
        raise AssertionError("unreachable")  # pragma: no cover

    def _resolved(
        self,
        chunk: Chunk,
        *,
        failures: list[dict[str, Any]] | None = None,
        piece: Piece | None = None,
    ) -> None:
        if failures:
            chunk.failures.extend(failures)
            chunk.resolved += len(failures)
        if piece is not None:
            chunk.pieces.append(piece)
            chunk.resolved += len(piece.indices)
        if chunk.resolved >= chunk.expected and self._group is not None:
            self._group.create_task(self._commit(chunk))

    async def _commit(self, chunk: Chunk) -> None:
        del self._chunks[chunk.number]
        succeeded, cpu = await asyncio.to_thread(self._write_chunk, chunk)
        self.cpu_seconds["writing"] += cpu
        self.on_commit(succeeded, len(chunk.failures), chunk.failures)

    def _write_chunk(self, chunk: Chunk) -> tuple[int, float]:
        """Commit `chunk` (in a thread); returns its predictions and the CPU seconds spent."""
        s = self.settings
        started = time.thread_time()
        succeeded = write_chunk(
            self.layout,
            chunk,
            self.outputs,
            self.output_names,
            round_=s.round,
            shard=s.shard,
            output_format=s.output_format,
        )
        return succeeded, time.thread_time() - started
