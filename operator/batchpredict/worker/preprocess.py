"""Turn a batch of items into input tensors (CPU work: called from a thread).

Columnar batches (Parquet) convert a whole column at once; anything that does not convert
cleanly falls back to item-by-item conversion, so one malformed item fails alone with a message
that names its field.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from batchpredict.api.v1alpha1.data import ImagePreprocess, Preprocess
from batchpredict.io.readers import MALFORMED, ItemBatch
from batchpredict.triton.tensors import ITEM_FIELD, InputBinding

UNREADABLE = "UNREADABLE_ITEM"
PREPROCESS_FAILED = "PREPROCESS_FAILED"


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


class ItemError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def load_function(path: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Import `module:function`; a clear error when it is not there."""
    module_name, _, name = path.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"spec.input.preprocess.function: cannot import {path!r}: {error}"
        ) from None
    if not callable(function):
        raise TypeError(f"spec.input.preprocess.function: {path!r} is not callable")
    return function  # type: ignore[no-any-return]


class Preprocessor:
    """Builds requests of at most `batch_size` items from ItemBatches."""

    def __init__(
        self,
        inputs: list[InputBinding],
        preprocess: Preprocess | None,
        include_fields: list[str],
        batch_size: int,
        batched: bool = True,
    ) -> None:
        self.inputs = inputs
        self.image = preprocess.image if preprocess else None
        self.function = (
            load_function(preprocess.function) if preprocess and preprocess.function else None
        )
        self.include = include_fields
        self.batch_size = batch_size if batched else 1
        self.batched = batched

    def prepare(self, batch: ItemBatch) -> Prepared:
        prepared = Prepared(batch, errors=dict(batch.errors))
        if batch.table is not None and self.function is None and self.image is None:
            names = batch.table.schema.names
            prepared.carried = {
                f: batch.table.column(f) if f in names else pa.nulls(len(batch))
                for f in self.include
            }
            if not self._columnar(batch.table, prepared):
                self._per_item(list(batch.table.to_pylist()), prepared)
        else:
            rows = list(batch.rows) if batch.rows is not None else _table_rows(batch.table)
            prepared.carried = {f: [r.get(f) if r else None for r in rows] for f in self.include}
            self._per_item(rows, prepared)
        # Outcomes need only ids, positions and carried fields: the rows or table go now,
        # not when the last chunk holding one of their items commits.
        prepared.batch = dataclasses.replace(batch, rows=None, table=None)
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

    def _per_item(self, rows: list[dict[str, Any] | None], prepared: Prepared) -> None:
        groups: dict[tuple[tuple[int, ...], ...], list[tuple[int, list[NDArray[Any]]]]] = {}
        for index, row in enumerate(rows):
            if index in prepared.errors or row is None:
                prepared.errors.setdefault(index, (MALFORMED, "item could not be read"))
                continue
            try:
                arrays = self._item_tensors(row)
            except ItemError as failure:
                prepared.errors[index] = (failure.code, str(failure))
                continue
            key = tuple(a.shape for a in arrays)
            groups.setdefault(key, []).append((index, arrays))
        # Items of different shapes (variable dims) cannot share a request.
        for members in groups.values():
            indices = np.array([index for index, _ in members], dtype=np.intp)
            tensors = {
                b.tensor: np.stack([arrays[j] for _, arrays in members])
                for j, b in enumerate(self.inputs)
            }
            self._add_requests(prepared, indices, tensors)

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

    def _item_tensors(self, row: dict[str, Any]) -> list[NDArray[Any]]:
        if ITEM_FIELD in (b.field for b in self.inputs) or self.image or self.function:
            row = self._transform(row)
        arrays = []
        for binding in self.inputs:
            if binding.field not in row:
                raise ItemError(MALFORMED, f"field {binding.field!r} is missing")
            arrays.append(_to_array(binding, row[binding.field]))
        return arrays

    def _transform(self, row: dict[str, Any]) -> dict[str, Any]:
        row = dict(row)
        uri = row.pop("_uri", None)
        if uri is not None:
            try:
                with fsspec.open(uri, "rb") as handle:
                    row[ITEM_FIELD] = handle.read()
            except OSError as error:
                raise ItemError(
                    UNREADABLE, f"cannot read {row.get('path', uri)}: {error}"
                ) from None
        if self.image is not None:
            row[ITEM_FIELD] = decode_image(row.get(ITEM_FIELD), self.image, row.get("path"))
        if self.function is not None:
            try:
                result = self.function(row)
            except Exception as error:  # noqa: BLE001 (user code: any error fails the item)
                raise ItemError(PREPROCESS_FAILED, f"{type(error).__name__}: {error}") from None
            if not isinstance(result, dict):
                raise ItemError(PREPROCESS_FAILED, "preprocess function did not return a dict")
            row = {**row, **result}
        return row


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


def _to_array(binding: InputBinding, value: Any) -> NDArray[Any]:
    if value is None:  # numpy would turn it into NaN silently
        raise ItemError(MALFORMED, f"field {binding.field!r} is null or missing")
    try:
        if binding.datatype == "BYTES":
            array = np.asarray(value, dtype=object)
        else:
            array = np.asarray(value, dtype=binding.dtype)
    except (ValueError, TypeError) as error:
        shown = repr(value)[:80]
        raise ItemError(
            MALFORMED,
            f"field {binding.field!r}: cannot convert {shown} to {binding.datatype} ({error})",
        ) from None
    shape = binding.shape
    if -1 in shape:
        if array.ndim != len(shape) or any(
            d not in (-1, a) for d, a in zip(shape, array.shape, strict=True)
        ):
            if array.size == 1 and len(shape) == 1:
                return array.reshape(1)
            raise ItemError(
                MALFORMED,
                f"field {binding.field!r}: shape {list(array.shape)} does not fit {list(shape)}",
            )
        return array
    if array.size != int(np.prod(shape)):
        raise ItemError(
            MALFORMED,
            f"field {binding.field!r}: {array.size} values do not fit shape {list(shape)}",
        )
    return array.reshape(shape)


def decode_image(data: Any, spec: ImagePreprocess, name: str | None) -> NDArray[Any]:
    """Decode, convert, resize and normalize an image into a float32 array."""
    if not isinstance(data, bytes | bytearray):
        raise ItemError(MALFORMED, f"{name or 'item'}: no image bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            converted = image.convert(spec.mode)
            if spec.resize:
                height, width = spec.resize
                converted = converted.resize((width, height))
            array = np.asarray(converted, dtype=np.float32)
    except UnidentifiedImageError:
        # Pillow's own text names its in-memory buffer ("<_io.BytesIO object at 0x...>").
        raise ItemError(
            UNREADABLE, f"cannot decode image {name or ''}: not an image format Pillow reads"
        ) from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ItemError(UNREADABLE, f"cannot decode image {name or ''}: {error}") from None
    if array.ndim == 2:
        array = array[:, :, None]
    array = array * spec.scale
    if spec.mean is not None:
        array = array - np.asarray(spec.mean, dtype=np.float32)
    if spec.std is not None:
        array = array / np.asarray(spec.std, dtype=np.float32)
    return array.transpose(2, 0, 1) if spec.channels_first else array
