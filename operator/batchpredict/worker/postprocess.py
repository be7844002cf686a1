"""Turn output tensors into prediction columns: keep, argmax, or top-k (vectorized).

A one-value output becomes a scalar column; larger outputs become flat lists; `topk` gives the
`k` best class indices in `<field>` and their scores in `<field>_scores`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from batchpredict.api.v1alpha1.serving import Postprocess
from batchpredict.triton.tensors import OutputBinding


def _list_column(values: NDArray[Any]) -> pa.Array:
    n, size = values.shape
    return (
        pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), size)
        if n
        else (pa.array([], type=pa.list_(pa.from_numpy_dtype(values.dtype), size)))
    )


def _bytes_column(values: NDArray[Any]) -> pa.Array:
    def text(value: object) -> object:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    flat = [[text(v) for v in row] for row in values]
    return pa.array([row[0] if len(row) == 1 else row for row in flat])


# Up to this k, k passes of argmax beat a partition and a sort (rows of few classes).
_ARGMAX_PASSES_UP_TO = 8


def _top_k(values: NDArray[Any], k: int) -> NDArray[Any]:
    """Indices of the k largest values per row, best first."""
    if k <= _ARGMAX_PASSES_UP_TO and np.isfinite(values).all():
        # -inf marks a taken class: below every finite value, it is never taken twice.
        work = values.astype(np.float64)
        rows = np.arange(len(work))
        best = np.empty((len(work), k), dtype=np.int64)
        for j in range(k):
            best[:, j] = work.argmax(axis=1)
            work[rows, best[:, j]] = -np.inf
        return best
    if k < values.shape[1]:
        part = np.argpartition(-values, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(values.shape[1]), values.shape)
    scores = np.take_along_axis(values, part, axis=1)
    return np.take_along_axis(part, np.argsort(-scores, axis=1, kind="stable"), axis=1)


def output_columns(
    bindings: list[OutputBinding], outputs: dict[str, NDArray[Any]], n: int
) -> dict[str, pa.Array]:
    """Prediction columns for `n` items from the batched output arrays."""
    columns: dict[str, pa.Array] = {}
    for binding in bindings:
        values = outputs[binding.tensor].reshape(n, -1)
        if values.dtype == object:
            columns[binding.field] = _bytes_column(values)
        elif binding.postprocess == Postprocess.ARGMAX:
            columns[binding.field] = pa.array(np.argmax(values, axis=1).astype(np.int64))
        elif binding.postprocess == Postprocess.TOPK:
            k = min(binding.k, values.shape[1])
            best = _top_k(values, k)
            columns[binding.field] = _list_column(best.astype(np.int64))
            columns[f"{binding.field}_scores"] = _list_column(
                np.take_along_axis(values, best, axis=1)
            )
        elif values.shape[1] == 1:
            columns[binding.field] = pa.array(np.ascontiguousarray(values[:, 0]))
        else:
            columns[binding.field] = _list_column(values)
    return columns
