"""One item into its input tensors: read its file, decode its image, call the user's function,
convert fields to arrays. Runs in the preprocessing pool (itempool.py): threads, or processes
that rebuild the transform from its picklable settings.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from batchpredict.api.v1alpha1.data import ImagePreprocess
from batchpredict.io.dicom import DicomSource
from batchpredict.io.readers import MALFORMED, SOURCE_FIELD, FileRef
from batchpredict.triton.tensors import ITEM_FIELD, InputBinding

UNREADABLE = "UNREADABLE_ITEM"
PREPROCESS_FAILED = "PREPROCESS_FAILED"
# Pillow modes a JPEG decoder can produce at reduced scale (draft mode).
_DRAFT_MODES = {"RGB", "L"}

# An item's outcome: its arrays (one per input), or (code, message) when it failed.
Outcome = list[NDArray[Any]] | tuple[str, str]


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


@dataclass
class ItemTransform:
    """Turns one row into arrays; picklable (the function is imported where it runs)."""

    inputs: list[InputBinding]
    image: ImagePreprocess | None = None
    function_path: str | None = None
    _function: Callable[[dict[str, Any]], dict[str, Any]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def needed(self) -> bool:
        """Whether items need more than a field lookup (a file, an image, a function)."""
        fields = {b.field for b in self.inputs}
        return ITEM_FIELD in fields or self.image is not None or self.function_path is not None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_function": None}

    def apply(self, row: dict[str, Any]) -> Outcome:
        """The item's arrays, or (code, message) when it cannot be made into tensors."""
        try:
            return self.tensors(row)
        except ItemError as failure:
            return failure.code, str(failure)

    def tensors(self, row: dict[str, Any]) -> list[NDArray[Any]]:
        if self.needed:
            row = self._transform(row)
        arrays = []
        for binding in self.inputs:
            if binding.field not in row:
                raise ItemError(MALFORMED, f"field {binding.field!r} is missing")
            arrays.append(_to_array(binding, row[binding.field]))
        return arrays

    def _transform(self, row: dict[str, Any]) -> dict[str, Any]:
        row = dict(row)
        source = row.pop(SOURCE_FIELD, None)
        # Only a file the reader listed is opened: a row's own fields never name what to fetch.
        if isinstance(source, DicomSource):
            from batchpredict.worker.dicom_pixels import read_item  # noqa: PLC0415 (imports us)

            row[ITEM_FIELD] = read_item(source)
        elif isinstance(source, FileRef):
            try:
                row[ITEM_FIELD] = source.read()
            except OSError as error:
                raise ItemError(
                    UNREADABLE, f"cannot read {row.get('path', source.path)}: {error}"
                ) from None
        if self.image is not None:
            row[ITEM_FIELD] = decode_image(row.get(ITEM_FIELD), self.image, row.get("path"))
        if self.function_path is not None:
            if self._function is None:
                self._function = load_function(self.function_path)
            try:
                result = self._function(row)
            except Exception as error:  # noqa: BLE001 (user code: any error fails the item)
                raise ItemError(PREPROCESS_FAILED, f"{type(error).__name__}: {error}") from None
            if not isinstance(result, dict):
                raise ItemError(PREPROCESS_FAILED, "preprocess function did not return a dict")
            row = {**row, **result}
        return row


# The transform of a pool process (set once by its initializer).
_PROCESS_TRANSFORM: ItemTransform | None = None


def init_process(transform: ItemTransform) -> None:
    global _PROCESS_TRANSFORM  # noqa: PLW0603 (one per pool process, set at its start)
    _PROCESS_TRANSFORM = transform


def apply_in_process(row: dict[str, Any]) -> Outcome:
    if _PROCESS_TRANSFORM is None:
        raise RuntimeError("the preprocessing process was not initialized")
    return _PROCESS_TRANSFORM.apply(row)


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
            if spec.resize and image.format == "JPEG":
                # Decode at 1/2, 1/4 or 1/8 scale (DCT scaling) when the target is that much
                # smaller: most of the decoding cost goes, and the resize below gets smaller.
                height, width = spec.resize
                image.draft(spec.mode if spec.mode in _DRAFT_MODES else None, (width, height))
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
