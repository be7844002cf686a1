"""One output chunk: outcomes gathered until every item has one, then committed atomically."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from batchpredict.io.layout import OutputLayout
from batchpredict.io.writers import encode_jsonl, encode_table
from batchpredict.triton.tensors import OutputBinding
from batchpredict.worker.postprocess import output_columns
from batchpredict.worker.preprocess import Prepared

log = logging.getLogger(__name__)
ID_COLUMN = "id"


@dataclass(frozen=True)
class Piece:
    """Items of one answered request: where they are in their batch, and the model's outputs."""

    prepared: Prepared
    indices: NDArray[np.intp]
    outputs: dict[str, NDArray[Any]]

    def order(self) -> NDArray[np.int64]:
        if self.prepared.order is None:
            raise RuntimeError("a prepared batch has no work-list order")
        return self.prepared.order[self.indices]

    def table(self) -> pa.Table:
        """Ids and carried input fields of the piece's items."""
        indices, n = self.indices, len(self.indices)
        first = int(indices[0])
        # Requests are usually contiguous runs of their batch: zero-copy Arrow slices.
        contiguous = int(indices[-1]) - first + 1 == n

        def pick(values: pa.Array) -> pa.Array:
            return values.slice(first, n) if contiguous else values.take(pa.array(indices))

        data: dict[str, Any] = {ID_COLUMN: pick(self.prepared.batch.ids)}
        for name, values in self.prepared.carried.items():
            if name == ID_COLUMN:
                continue
            if isinstance(values, pa.Array | pa.ChunkedArray):
                data[name] = pick(values)
            else:
                data[name] = [values[i] for i in indices.tolist()]
        return pa.table(data)


@dataclass
class Chunk:
    """Outcomes gathered for one output chunk until every item has one."""

    number: int
    expected: int
    resolved: int = 0
    # Succeeded items, one piece per request: tables and postprocessing are built once per
    # chunk, in the writer thread, to keep the event loop free.
    pieces: list[Piece] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


def predictions_table(
    chunk: Chunk, bindings: list[OutputBinding], output_names: list[str]
) -> pa.Table:
    """The chunk's predictions in work-list order: id, carried fields, postprocessed outputs."""
    if not chunk.pieces:
        return pa.table({ID_COLUMN: pa.array([], pa.string())})
    # Replies come in any order; pieces are runs of items, so sorting them usually suffices.
    unsorted = [piece.order() for piece in chunk.pieces]
    rank = np.argsort([o[0] for o in unsorted], kind="stable").tolist()
    pieces, orders = [chunk.pieces[i] for i in rank], [unsorted[i] for i in rank]
    table = pa.concat_tables([piece.table() for piece in pieces], promote_options="default")
    outputs = {
        name: np.concatenate([piece.outputs[name] for piece in pieces]) for name in output_names
    }
    order = np.concatenate(orders)
    if len(order) > 1 and not (np.diff(order) > 0).all():  # pieces interleave
        sort = np.argsort(order, kind="stable")
        table = table.take(pa.array(sort))
        outputs = {name: array[sort] for name, array in outputs.items()}
    try:
        columns = output_columns(bindings, outputs, table.num_rows)
    except ValueError as error:
        # The model answered with outputs that do not fit its own metadata.
        raise RuntimeError(f"cannot postprocess the model's outputs: {error}") from None
    for name, column in columns.items():
        if name in table.column_names:  # a prediction wins over a carried field
            table = table.drop_columns([name])
        table = table.append_column(name, column)
    return table


def write_chunk(
    layout: OutputLayout,
    chunk: Chunk,
    bindings: list[OutputBinding],
    output_names: list[str],
    *,
    round_: int,
    shard: int,
    output_format: str,
) -> int:
    """Commit the chunk: failures file first, predictions file last (the commit point)."""
    failures_path = layout.failures_chunk(round_, shard, chunk.number)
    if chunk.failures:
        failures = sorted(chunk.failures, key=lambda f: int(f["position"]))
        layout.write_atomic(failures_path, encode_jsonl(failures))
    else:
        # No file for no failure (an eighth of a small chunk's commit time); an attempt that
        # broke before committing may have left one, which must not outlive this commit.
        layout.remove(failures_path)
    table = predictions_table(chunk, bindings, output_names)
    path = layout.predictions_chunk(round_, shard, chunk.number, output_format)
    layout.write_atomic(path, encode_table(table, output_format))
    log.debug("committed chunk %d (%d rows)", chunk.number, table.num_rows)
    return int(table.num_rows)
