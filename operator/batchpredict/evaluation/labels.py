"""Labels joined with predictions by item id, memory flat in the dataset size.

Labels in the items ride in the prediction rows (an included field): nothing to join. A
separate labels dataset is joined by id: when the run has more than BUCKET_ITEMS items, both
sides are first split by a hash of the id into buckets of about BUCKET_ITEMS items (JSON lines
in a temporary directory), and each bucket is joined in memory in turn, so memory holds one
bucket's labels whatever the size of the run.
"""

from __future__ import annotations

import json
import math
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from batchpredict.api.v1alpha1.data import InputSpec
from batchpredict.api.v1alpha1.evaluation import EvaluationSpec
from batchpredict.io.readers import open_dataset
from batchpredict.io.results import RunOutputs

# Labels held in memory at once (a bucket): about 25 MB of Python objects. Beyond MAX_BUCKETS
# buckets (a run of 25 million items) the buckets grow instead of the open files.
BUCKET_ITEMS = 100_000
MAX_BUCKETS = 256
_READ_ROWS = 4096


@dataclass
class Labelled:
    """A label (None: the item has none) and the slice values known for it."""

    label: Any
    slices: dict[str, Any]


@dataclass
class Bucket:
    """Part of a run: its labels (from the labels dataset), its predictions and failed ids."""

    labels: dict[str, Labelled]
    predictions: Iterable[dict[str, Any]]
    failed_ids: Iterable[str]


def read_labels(spec: EvaluationSpec) -> Iterator[tuple[str, Labelled]]:
    """(id, label and slice values) of every row of the labels dataset, streaming."""
    source = spec.labels.dataset
    if source is None:
        raise ValueError("read_labels needs evaluation.labels.dataset")
    dataset = open_dataset(
        InputSpec(uri=source.uri, format=source.format, id_field=source.id_field)
    )
    fields = [spec.labels.field, *spec.slice_by]
    dataset.keep_only(set(fields))
    for batch in dataset.iter_items(batch_rows=_READ_ROWS):
        ids = batch.ids.to_pylist()
        if batch.table is not None:
            names = batch.table.schema.names
            columns = {
                f: batch.table.column(f).to_pylist() if f in names else [None] * len(ids)
                for f in fields
            }
            for i, item_id in enumerate(ids):
                slices = {f: columns[f][i] for f in spec.slice_by}
                yield str(item_id), Labelled(columns[spec.labels.field][i], slices)
        else:
            for item_id, row in zip(ids, batch.rows or [], strict=True):
                values = row or {}
                slices = {f: values.get(f) for f in spec.slice_by}
                yield str(item_id), Labelled(values.get(spec.labels.field), slices)


def buckets(
    outputs: RunOutputs, spec: EvaluationSpec, total: int, work_dir: str | None = None
) -> Iterator[Bucket]:
    """The run in buckets to join one at a time (one bucket: no temporary files)."""
    count = min(MAX_BUCKETS, max(1, math.ceil(total / BUCKET_ITEMS)))
    failed_ids = (str(r["id"]) for r in outputs.failures())
    if count == 1:
        yield Bucket(dict(read_labels(spec)), outputs.predictions(), failed_ids)
        return
    with tempfile.TemporaryDirectory(prefix="evaluation-", dir=work_dir) as tmp:
        root = Path(tmp)
        _split(root, "labels", count, ((i, [v.label, v.slices]) for i, v in read_labels(spec)))
        # Only what the evaluation reads of a prediction goes to disk (not embeddings, say).
        keep = ["id", spec.prediction, *spec.slice_by]
        rows = ({k: r[k] for k in keep if k in r} for r in outputs.predictions())
        _split(root, "predictions", count, ((str(r.get("id")), r) for r in rows))
        _split(root, "failed", count, ((i, None) for i in failed_ids))
        for b in range(count):
            labels = {
                item_id: Labelled(value[0], value[1])
                for item_id, value in _read(root / f"labels-{b}.jsonl")
            }
            yield Bucket(
                labels,
                (value for _, value in _read(root / f"predictions-{b}.jsonl")),
                (item_id for item_id, _ in _read(root / f"failed-{b}.jsonl")),
            )
            # One bucket's labels in memory at a time: gone before the next one is read.
            labels.clear()
            del labels


def _bucket(item_id: str, count: int) -> int:
    return zlib.crc32(item_id.encode()) % count


def _split(root: Path, name: str, count: int, records: Iterable[tuple[str, Any]]) -> None:
    with ExitStack() as stack:
        files: list[IO[str]] = [
            stack.enter_context((root / f"{name}-{b}.jsonl").open("w", encoding="utf-8"))
            for b in range(count)
        ]
        for item_id, value in records:
            files[_bucket(item_id, count)].write(
                json.dumps([item_id, value], separators=(",", ":")) + "\n"
            )


def _read(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            item_id, value = json.loads(line)
            yield item_id, value
