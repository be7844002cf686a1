"""Map dataset fields to a model's input tensors and its outputs to prediction fields.

The mapping comes from `spec.model.inputs/outputs` where given, else from Triton's model
metadata: a single-input model takes the field named like its tensor, or the only data field,
or (for `files`) the item itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tritonclient.utils import triton_to_np_dtype

from batchpredict.api.v1alpha1.serving import ModelRef, Postprocess
from batchpredict.triton.client import ModelInfo

ITEM_FIELD = "$item"
# Input bytes budget of one request when the batch size is automatic.
AUTO_BATCH_BYTES = 32 * 1024 * 1024
AUTO_BATCH_MAX = 1024
# A request's input bytes, whatever the spec asks: gRPC refuses messages of 2 GiB or more.
MAX_REQUEST_BYTES = 1024 * 1024 * 1024
MAX_AUTO_CONCURRENCY = 64


class MappingError(ValueError):
    """The spec's tensor mapping does not fit the model or the dataset."""


@dataclass(frozen=True)
class InputBinding:
    tensor: str
    field: str
    datatype: str
    shape: tuple[int, ...]  # one item's shape; -1 = variable

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return np.dtype(triton_to_np_dtype(self.datatype))

    @property
    def fixed_size(self) -> bool:
        """Whether every item has the same size: no variable dimension, not BYTES."""
        return self.datatype != "BYTES" and -1 not in self.shape

    def item_bytes(self) -> int:
        size = int(np.prod([d if d > 0 else 1 for d in self.shape])) if self.shape else 1
        return size * (self.dtype.itemsize if self.datatype != "BYTES" else 64)


@dataclass(frozen=True)
class OutputBinding:
    tensor: str
    field: str
    postprocess: Postprocess = Postprocess.NONE
    k: int = 5


def bind_inputs(spec: ModelRef, info: ModelInfo, fields: list[str]) -> list[InputBinding]:
    """Input bindings; `fields` are the dataset's fields (after preprocessing) for defaults."""
    meta = {t.name: t for t in info.inputs}
    if spec.inputs:
        bindings = []
        for entry in spec.inputs:
            tensor = meta.get(entry.name)
            if tensor is None:
                raise MappingError(
                    f"spec.model.inputs: model {info.name!r} has no input {entry.name!r} "
                    f"(it has {sorted(meta)})"
                )
            datatype = entry.dtype.value if entry.dtype else tensor.datatype
            shape = tuple(entry.shape) if entry.shape is not None else tuple(tensor.shape)
            bindings.append(InputBinding(entry.name, entry.field or entry.name, datatype, shape))
        missing = sorted(set(meta) - {b.tensor for b in bindings})
        if missing:
            raise MappingError(f"spec.model.inputs: no mapping for model inputs {missing}")
        return bindings
    if len(meta) == 1:
        tensor = info.inputs[0]
        field = _single_input_field(tensor.name, fields)
        return [InputBinding(tensor.name, field, tensor.datatype, tuple(tensor.shape))]
    absent = sorted(name for name in meta if name not in fields)
    if absent and fields:
        raise MappingError(
            f"spec.model.inputs: model {info.name!r} has inputs {sorted(meta)}; the dataset has "
            f"no fields {absent}: map them with spec.model.inputs[].field"
        )
    return [InputBinding(t.name, t.name, t.datatype, tuple(t.shape)) for t in info.inputs]


def _single_input_field(tensor: str, fields: list[str]) -> str:
    if not fields or tensor in fields:
        return tensor
    if ITEM_FIELD in fields:
        return ITEM_FIELD
    data = [f for f in fields if not f.startswith("_")]
    if len(data) == 1:
        return data[0]
    raise MappingError(
        f"spec.model.inputs: cannot tell which of the fields {data} feeds input {tensor!r}; "
        f"set spec.model.inputs: [{{name: {tensor}, field: <field>}}]"
    )


def bind_outputs(spec: ModelRef, info: ModelInfo) -> list[OutputBinding]:
    names = [t.name for t in info.outputs]
    if not spec.outputs:
        return [OutputBinding(name, name) for name in names]
    unknown = [o.name for o in spec.outputs if o.name not in names]
    if unknown:
        raise MappingError(
            f"spec.model.outputs: model {info.name!r} has no outputs {unknown} (it has {names})"
        )
    return [OutputBinding(o.name, o.field or o.name, o.postprocess, o.k) for o in spec.outputs]


def auto_batch_size(info: ModelInfo, inputs: list[InputBinding], wanted: int | None) -> int:
    """Requested size within max_batch_size and MAX_REQUEST_BYTES; else the largest preferred
    size, else what fits AUTO_BATCH_BYTES (at most AUTO_BATCH_MAX)."""
    limit = info.max_batch_size
    if limit <= 0:
        return 1  # the model does not batch: one item per request
    item_bytes = max(1, sum(b.item_bytes() for b in inputs))
    if wanted is not None:
        return max(1, min(wanted, limit, MAX_REQUEST_BYTES // item_bytes))
    if info.preferred_batch_sizes:
        return min(max(info.preferred_batch_sizes), limit)
    return max(1, min(limit, AUTO_BATCH_MAX, AUTO_BATCH_BYTES // item_bytes))


def auto_concurrency(info: ModelInfo, wanted: int | None) -> int:
    """Requests in flight to start with: enough to keep every model instance busy while
    replies travel (the worker then tunes it, see worker/tuning.py)."""
    if wanted is not None:
        return wanted
    return max(4, min(MAX_AUTO_CONCURRENCY, 2 * info.instances))
