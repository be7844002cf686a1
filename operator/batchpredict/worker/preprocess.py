"""Turn a batch of items into input tensors (CPU work: called from the reading thread).

Columnar batches (Parquet, JSONL, CSV) convert a whole column at once; anything that does not
convert cleanly falls back to item-by-item conversion, so one malformed item fails alone with
a message that names its field. Items that need a file read, an image decoded or the user's
function run in a pool over the pod's cores (itempool.py), a few batches ahead, in order.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from batchpredict.api.v1alpha1.data import Preprocess
from batchpredict.io.readers import MALFORMED, ItemBatch
from batchpredict.triton.tensors import InputBinding
from batchpredict.worker.itempool import ItemPool, pod_cpus
from batchpredict.worker.transform import (
    PREPROCESS_FAILED,
    UNREADABLE,
    ItemError,
    ItemTransform,
    Outcome,
    apply_in_process,
    decode_image,
    init_process,
    load_function,
)

__all__ = ["PREPROCESS_FAILED", "UNREADABLE", "ItemError", "Prepared", "Preprocessor", "Request"]
__all__ += ["decode_image", "load_function"]
# Batches whose items are in the pool while the oldest is assembled into requests: one keeps
# the pool busy meanwhile; each is up to pipeline.READ_BYTES of tensors.
AHEAD = 1


@dataclass
class Request:
    """Items of one inference request: their indices in the batch and stacked tensors."""

    indices: NDArray[np.intp]
    tensors: dict[str, NDArray[Any]]
    # The request as sent (TritonClient.encode), built ahead in the reading thread.
    encoded: bytes | None = None


@dataclass
class Prepared:
    batch: ItemBatch
    requests: list[Request] = field(default_factory=list)
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)
    # Input fields copied next to predictions: Arrow arrays (Parquet) or lists (rows).
    carried: dict[str, pa.Array | list[Any]] = field(default_factory=dict)
    # Each item's index in the shard's work list (set by the pipeline).
    order: NDArray[np.int64] | None = None


@dataclass
class _Started:
    """A batch whose items are being transformed: `outcomes` in the order of `indices`."""

    prepared: Prepared
    indices: list[int] = field(default_factory=list)
    outcomes: Iterator[Outcome] = field(default_factory=lambda: iter(()))


class Preprocessor:
    """Builds requests of at most `batch_size` items from ItemBatches."""

    def __init__(  # noqa: PLR0917 (what the shard knows about its inputs)
        self,
        inputs: list[InputBinding],
        preprocess: Preprocess | None,
        include_fields: list[str],
        batch_size: int,
        batched: bool = True,
        workers: int | None = None,
    ) -> None:
        self.inputs = inputs
        self.image = preprocess.image if preprocess else None
        function = preprocess.function if preprocess else None
        if function:
            load_function(function)  # a clear error now, not in every item
        self.function = function
        self.transform = ItemTransform(inputs, self.image, function)
        self.include = include_fields
        self.batch_size = batch_size if batched else 1
        self.batched = batched
        # Only items that need more than a field lookup go to the pool.
        wanted = workers or (preprocess.workers if preprocess else None) or pod_cpus()
        self.workers = wanted if self.transform.needed else 1
        self.pool = ItemPool(
            self.workers,
            processes=function is not None,
            initializer=init_process if function is not None else None,
            initargs=(self.transform,) if function is not None else (),
        )

    def close(self) -> None:
        self.pool.close()

    def prepare(self, batch: ItemBatch) -> Prepared:
        return self._finish(self._start(batch))

    def prepare_all(self, batches: Iterable[ItemBatch], ahead: int = AHEAD) -> Iterator[Prepared]:
        """`prepare` over `batches`, in order, with `ahead` batches in the pool meanwhile
        (so that the pool keeps working while a batch is assembled and sent on)."""
        started: deque[_Started] = deque()
        for batch in batches:
            started.append(self._start(batch))
            if len(started) > ahead:
                yield self._finish(started.popleft())
        while started:
            yield self._finish(started.popleft())

    def _start(self, batch: ItemBatch) -> _Started:
        prepared = Prepared(batch, errors=dict(batch.errors))
        if batch.table is not None and not self.transform.needed:
            names = batch.table.schema.names
            prepared.carried = {
                f: batch.table.column(f) if f in names else pa.nulls(len(batch))
                for f in self.include
            }
            if self._columnar(batch.table, prepared):
                return _Started(prepared)
            rows = _table_rows(batch.table)
        else:
            rows = list(batch.rows) if batch.rows is not None else _table_rows(batch.table)
            prepared.carried = {f: [r.get(f) if r else None for r in rows] for f in self.include}
        todo: list[int] = []
        for index, row in enumerate(rows):
            if index in prepared.errors or row is None:
                prepared.errors.setdefault(index, (MALFORMED, "item could not be read"))
            else:
                todo.append(index)
        function = apply_in_process if self.pool.processes else self.transform.apply
        items = [rows[i] for i in todo]
        return _Started(prepared, todo, self.pool.submit(function, items))

    def _finish(self, started: _Started) -> Prepared:
        prepared = started.prepared
        groups: dict[tuple[tuple[int, ...], ...], list[tuple[int, list[NDArray[Any]]]]] = {}
        for index, outcome in zip(started.indices, started.outcomes, strict=True):
            if isinstance(outcome, tuple):
                prepared.errors[index] = outcome
                continue
            key = tuple(a.shape for a in outcome)
            groups.setdefault(key, []).append((index, outcome))
        # Items of different shapes (variable dims) cannot share a request.
        for members in groups.values():
            indices = np.array([index for index, _ in members], dtype=np.intp)
            tensors = {
                b.tensor: np.stack([arrays[j] for _, arrays in members])
                for j, b in enumerate(self.inputs)
            }
            self._add_requests(prepared, indices, tensors)
        # Outcomes need only ids, positions and carried fields: the rows or table go now,
        # not when the last chunk holding one of their items commits.
        prepared.batch = dataclasses.replace(prepared.batch, rows=None, table=None)
        return prepared

    def _columnar(self, table: pa.RecordBatch, prepared: Prepared) -> bool:
        """Whole-column conversion; False when some item needs the per-item path."""
        n = table.num_rows
        tensors = {}
        for binding in self.inputs:
            if binding.field not in table.schema.names or binding.datatype == "BYTES":
                return False
            column = table.column(binding.field)
            if column.null_count:
                return False
            try:
                values = _flat_values(column, binding)
                if values is None:
                    return False
                array = values.astype(binding.dtype, copy=False).reshape(
                    n, *_shape(binding, values, n)
                )
            except (ValueError, TypeError, pa.ArrowException):
                return False
            tensors[binding.tensor] = array
        indices = np.arange(n)
        if prepared.errors:
            indices = np.setdiff1d(indices, np.fromiter(prepared.errors, np.intp))
            tensors = {k: v[indices] for k, v in tensors.items()}
        self._add_requests(prepared, indices, tensors)
        return True

    def _add_requests(
        self, prepared: Prepared, indices: NDArray[np.intp], tensors: dict[str, NDArray[Any]]
    ) -> None:
        if not len(indices):
            return
        if not self.batched:  # the model takes one item without a batch dimension
            for j in range(len(indices)):
                single = {k: v[j] for k, v in tensors.items()}
                prepared.requests.append(Request(indices[j : j + 1], single))
            return
        size = self.batch_size
        for start in range(0, len(indices), size):  # views: no copies
            part = slice(start, start + size)
            prepared.requests.append(
                Request(indices[part], {k: v[part] for k, v in tensors.items()})
            )


def _table_rows(table: pa.RecordBatch | None) -> list[dict[str, Any] | None]:
    return list(table.to_pylist()) if table is not None else []


def _flat_values(column: pa.Array, binding: InputBinding) -> NDArray[Any] | None:
    """A column's values as one flat numpy array; None when items differ in length."""
    n = len(column)
    while pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
        lengths = pc.list_value_length(column).to_numpy()
        if n and (lengths != lengths[0]).any():
            return None
        column, n = column.flatten(), int(lengths.sum()) if n else 0
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        # CSV values are text: Arrow parses the numbers (failures go item by item).
        if binding.datatype == "BYTES" or not np.issubdtype(binding.dtype, np.number):
            return None
        column = pc.cast(column, pa.from_numpy_dtype(binding.dtype))
    return column.to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def _shape(binding: InputBinding, values: NDArray[Any], n: int) -> tuple[int, ...]:
    per_item = values.size // n if n else 0
    shape = binding.shape
    if -1 in shape or int(np.prod(shape)) != per_item:
        known = int(np.prod([d for d in shape if d > 0])) if shape else 1
        if shape.count(-1) == 1 and known and per_item % known == 0:
            return tuple(per_item // known if d == -1 else d for d in shape)
        raise ValueError("shape mismatch")
    return shape
