"""Dataset readers over fsspec: JSONL, CSV, Parquet (streamed in record batches) and files.

Every reader yields `ItemBatch`es in dataset order. An item's *position* counts the items kept
by `select` (0, 1, 2, ...): shards are ranges of positions. Its *id* is the `idField` value,
else the row number in the dataset (before `select`), else, for files, the relative path.
A row that cannot be read fails alone: it keeps its position and id and carries an error.
JSONL and CSV are parsed by Arrow in blocks (textblocks.py, jsonlblocks.py, csvblocks.py) and
yield Arrow batches like
Parquet; ids and `select.where` compare values as text the way Python's `str` writes them.
In a plan by byte ranges (splits.py) a shard reads its range alone: positions count from the
range's base, and a row without an id is `<file>:<range start>+<k>`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from batchpredict.api.v1alpha1.data import InputFormat, InputSpec, Select
from batchpredict.io.csvblocks import count_csv, csv_blocks, csv_header
from batchpredict.io.jsonlblocks import count_jsonl, first_jsonl_row, jsonl_blocks
from batchpredict.io.splits import ByteSplit, split_stream
from batchpredict.io.storage import filesystem
from batchpredict.io.textblocks import MALFORMED, TextBlock, open_decompressed, strip_codec

if TYPE_CHECKING:
    from batchpredict.io.dicom import DicomIndex

__all__ = ["MALFORMED", "Dataset", "DatasetNotFoundError", "ItemBatch", "open_dataset", "take"]
# The whole file's bytes, for `files` datasets (`$item` in tensor mappings).
ITEM_FIELD = "$item"
PATH_FIELD = "path"
# Where a `files` item's bytes are: a FileRef the reader made from its own listing. Rows read from
# data never hold one (JSON and CSV give strings, numbers, lists, dicts), so the data cannot
# decide what the worker opens.
SOURCE_FIELD = "$source"
_SUFFIXES = {
    InputFormat.JSONL: (".jsonl", ".json", ".ndjson"),
    InputFormat.CSV: (".csv",),
    InputFormat.PARQUET: (".parquet", ".pq"),
}


class DatasetNotFoundError(Exception):
    """The dataset URI names nothing readable."""


@dataclass
class ItemBatch:
    """Consecutive items: either an Arrow `table` (Parquet) or Python `rows`.

    Positions (int64) and ids (Arrow strings) stay vectors: the hot path never loops per item.
    """

    positions: NDArray[np.int64]
    ids: pa.Array
    rows: list[dict[str, Any] | None] | None = None
    table: pa.RecordBatch | None = None
    # index in this batch -> (code, message) for items that could not be read
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.positions)

    def id_at(self, index: int) -> str:
        return str(self.ids[index].as_py())


@dataclass(frozen=True)
class FileRef:
    """A file of a `files` dataset, found by listing the dataset root."""

    fs: Any
    path: str

    def read(self) -> bytes:
        with self.fs.open(self.path, "rb") as handle:
            return bytes(handle.read())


class Dataset:
    """A dataset named by an InputSpec; opening it checks that it exists."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.select = spec.select or Select()
        self.fs, root = filesystem(spec.uri, "spec.input.uri")
        self.root = root.rstrip("/")
        self.files = self._list_files()
        self._listed = frozenset(self.files)
        # The fields a shard uses (None: all): JSONL converts only those (see `keep_only`).
        self.keep: frozenset[str] | None = None
        # `dicom`: the header index (io/dicom.py), built on first use or given by the plan.
        self.dicom: DicomIndex | None = None

    def keep_only(self, fields: set[str] | None) -> None:
        """Items need only these fields (None: all) besides the id and `select.where`'s."""
        if fields is None:
            self.keep = None
            return
        extra = [*(self.select.where or {}), *filter(None, [self.spec.id_field])]
        self.keep = frozenset([*fields, *extra])

    def _list_files(self) -> list[str]:
        fs, root = self.fs, self.root
        if any(ch in root for ch in "*?["):
            files = sorted(p for p in fs.glob(root) if fs.isfile(p))
            base = root.split("*")[0].rsplit("/", 1)[0]
        elif fs.isdir(root):
            files, base = sorted(fs.find(root)), root
        elif fs.exists(root):
            files, base = [root], root.rsplit("/", 1)[0]
        else:
            raise DatasetNotFoundError(f"input.uri: {self.spec.uri} does not exist")
        self.base = base
        if self.spec.format in _SUFFIXES and len(files) > 1:
            files = [f for f in files if strip_codec(f).endswith(_SUFFIXES[self.spec.format])]
        if self.select.glob:
            import fnmatch  # noqa: PLC0415 (only for this option)

            files = [f for f in files if fnmatch.fnmatch(self.relative(f), self.select.glob)]
        if not files:
            raise DatasetNotFoundError(
                f"input.uri: no {self.spec.format.value} files under {self.spec.uri}"
                + (f" matching select.glob {self.select.glob!r}" if self.select.glob else "")
            )
        return files

    def relative(self, path: str) -> str:
        return path[len(self.base) :].lstrip("/") if path.startswith(self.base) else path

    def dicom_index(self) -> DicomIndex:
        """A `dicom` dataset's header index (read once)."""
        if self.dicom is None:
            from batchpredict.api.v1alpha1.dicom import DicomInput  # noqa: PLC0415
            from batchpredict.io.dicom import build_index  # noqa: PLC0415 (pydicom: dicom only)

            names = [self.relative(f) for f in self.files]
            self.dicom = build_index(self.fs, self.files, names, self.spec.dicom or DicomInput())
        return self.dicom

    def group_sizes(self) -> list[int] | None:
        """Sizes of consecutive item groups that one shard must hold whole (the instances of
        a DICOM series), summing to `count()`; None when any cut will do."""
        if self.spec.format != InputFormat.DICOM or not self.dicom_index().instance_items:
            return None
        sizes: list[int] = []
        last: object = None
        for batch in self.iter_items(batch_rows=4096):  # headers only: no pixel is read
            for row in batch.rows or [None] * len(batch):
                series = row.get("SeriesInstanceUID") if row else None
                if series is not None and series == last:
                    sizes[-1] += 1
                else:
                    sizes.append(1)
                last = series
        return sizes

    def fields(self) -> list[str]:
        """Field names items have (from the Parquet schema or the first row)."""
        if self.spec.format == InputFormat.FILES:
            return [ITEM_FIELD, PATH_FIELD]
        if self.spec.format == InputFormat.DICOM:
            return [ITEM_FIELD, *self.dicom_index().fields()]
        if self.spec.format == InputFormat.PARQUET:
            with self.fs.open(self.files[0], "rb") as handle:
                return list(pq.ParquetFile(handle).schema_arrow.names)
        with self.fs.open(self.files[0], "rb") as handle:
            stream = open_decompressed(handle, self.files[0])
            if self.spec.format == InputFormat.CSV:
                return csv_header(stream)
            return list(first_jsonl_row(stream) or [])

    def count(self) -> int:
        """Number of items after `select`: from metadata (Parquet, files), from line ends
        (JSONL, CSV: not parsed), else by reading the items (`select.where`)."""
        if self.spec.format == InputFormat.FILES and not self.select.where:
            total = len(self.files)
        elif self.spec.format == InputFormat.DICOM and not self.select.where:
            total = len(self.dicom_index())
        elif self.spec.format == InputFormat.PARQUET and not self.select.where:
            total = 0
            for path in self.files:
                with self.fs.open(path, "rb") as handle:
                    total += pq.ParquetFile(handle).metadata.num_rows
        elif self.spec.format in {InputFormat.JSONL, InputFormat.CSV} and not self.select.where:
            total = sum(self._count_text(path) for path in self.files)
        else:
            total = sum(len(b) for b in self.iter_items(batch_rows=4096))
        return min(total, self.select.limit) if self.select.limit else total

    def _count_text(self, path: str) -> int:
        """Rows of a JSONL/CSV file counted from its line ends, without parsing it."""
        with self.fs.open(path, "rb") as handle:
            stream = open_decompressed(handle, path)
            return count_csv(stream) if self.spec.format == InputFormat.CSV else count_jsonl(stream)

    def iter_items(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        wanted: NDArray[np.int64] | None = None,
        batch_rows: int = 1024,
        split: tuple[ByteSplit, int] | None = None,
    ) -> Iterator[ItemBatch]:
        """Items with positions in [start, stop) (and in sorted `wanted`), streaming.
        `split`: (the byte range, the position of its first item) of a byte-range plan,
        whose items alone are read (`select.limit` does not apply: the plan refuses it)."""
        limit = self.select.limit
        if limit is not None and split is None:
            stop = limit if stop is None else min(stop, limit)
        if stop is not None and stop <= start:
            return
        if split is not None:
            batches = self._text(start, batch_rows, split)
        else:
            batches = self._kept_batches(start, batch_rows)
        for batch in batches:
            first, end = int(batch.positions[0]), int(batch.positions[-1]) + 1
            if end <= start:
                continue
            if stop is not None and first >= stop:
                return
            mask = batch.positions >= start
            if stop is not None:
                mask &= batch.positions < stop
            if wanted is not None:
                mask &= np.isin(batch.positions, wanted, assume_unique=True)
            if mask.all():
                yield batch
            elif mask.any():
                yield take(batch, np.flatnonzero(mask))
            if stop is not None and end >= stop:
                return

    def _kept_batches(self, start: int, batch_rows: int) -> Iterator[ItemBatch]:
        """Every item kept by `select.where`, numbered with positions."""
        if self.spec.format == InputFormat.PARQUET:
            yield from self._parquet(start, batch_rows)
            return
        if self.spec.format == InputFormat.DICOM:
            raw = ((n, i.id, i.row, i.error) for n, i in enumerate(self.dicom_index()))
            yield from self._python_rows(raw, 0, batch_rows)
            return
        if self.spec.format != InputFormat.FILES:
            yield from self._text(start, batch_rows)
            return
        yield from self._python_rows(self._files(), 0, batch_rows)

    def _python_rows(
        self,
        raw: Iterator[tuple[int, str, dict[str, Any] | None, tuple[str, str] | None]],
        position: int,
        batch_rows: int,
    ) -> Iterator[ItemBatch]:
        """Batches of rows kept by `select.where`, numbered from `position`."""
        pending: list[tuple[int, str, dict[str, Any] | None, tuple[str, str] | None]] = []
        for _row_number, item_id, row, error in raw:
            if row is not None and not self._matches(row):
                continue
            pending.append((position, item_id, row, error))
            position += 1
            if len(pending) >= batch_rows:
                yield _rows_batch(pending)
                pending = []
        if pending:
            yield _rows_batch(pending)

    def _text(
        self, start: int, batch_rows: int, split: tuple[ByteSplit, int] | None = None
    ) -> Iterator[ItemBatch]:
        """JSONL/CSV items: Arrow batches, Python rows only for blocks Arrow could not read.
        Without `select.where` positions are row numbers: rows before `start` are only
        counted (line ends found, nothing parsed). A byte-range split numbers its items
        from its base position, and an item without an id gets `<file>:<split start>+<k>`
        (its k-th row: the row numbers before it are not known)."""
        position = row_number = 0
        prefix = None
        blocks: Iterator[TextBlock]
        if split is None:
            skip = 0 if self.select.where else start
            blocks = (b for p in self.files for b in self._file_blocks(p, skip - row_number))
        else:
            part, position = split
            blocks = self._split_blocks(part, 0 if self.select.where else start - position)
            prefix = f"{self.relative(part.path)}:{part.start}+"
        for block in blocks:
            if block.counted is not None:
                position += block.counted
            elif block.table is None:
                numbered = [
                    (row_number + i, self._id(row) or f"{prefix or ''}{row_number + i}", row, error)
                    for i, (row, error) in enumerate(block.rows)
                ]
                for batch in self._python_rows(iter(numbered), position, batch_rows):
                    position = int(batch.positions[-1]) + 1
                    yield batch
            else:
                number = row_number
                for record in block.table.to_batches(max_chunksize=batch_rows):
                    numbers: range | list[int] = range(number, number + record.num_rows)
                    number += record.num_rows
                    kept, numbers = self._where(record, numbers, _text_values)
                    if kept.num_rows == 0:
                        continue
                    positions = np.arange(position, position + kept.num_rows, dtype=np.int64)
                    position += kept.num_rows
                    ids = self._arrow_ids(kept, numbers, _text_values, prefix)
                    yield ItemBatch(positions, ids, table=kept)
            row_number += block.num_rows

    def _split_blocks(self, split: ByteSplit, skip: int) -> Iterator[TextBlock]:
        """The blocks of one byte-range split (see splits.py); line numbers in messages
        count from the split's first line."""
        if split.path not in self._listed:
            # plan.json names the files: only those the dataset's own listing holds are read.
            raise DatasetNotFoundError(f"input.uri: {split.path} is not in the dataset")
        rel = self.relative(split.path)
        origin = f" of {rel}" + (f" counted from byte {split.start}" if split.start else "")
        header = None
        if self.spec.format == InputFormat.CSV and split.start > 0:
            with self.fs.open(split.path, "rb") as handle:
                header = csv_header(handle)
        with self.fs.open(split.path, "rb") as handle:
            if split.end is None:
                stream = open_decompressed(handle, split.path)
            else:
                stream = split_stream(handle, split.start, split.end)
            if self.spec.format == InputFormat.CSV:
                yield from csv_blocks(
                    stream, count_before=max(0, skip), header=header, origin=origin
                )
            else:
                exact = frozenset([*(self.select.where or {}), *filter(None, [self.spec.id_field])])
                yield from jsonl_blocks(
                    stream,
                    exact_text=exact,
                    count_before=max(0, skip),
                    keep=self.keep,
                    origin=origin,
                )

    def count_split(self, split: ByteSplit) -> int:
        """Items of one byte-range split: from its line ends (as `count` does), parsed only
        where that cannot tell (or to apply `select.where`)."""
        if self.select.where:
            return sum(len(b) for b in self.iter_items(0, split=(split, 0), batch_rows=4096))
        return sum(block.num_rows for block in self._split_blocks(split, sys.maxsize))

    def bytes_per_item(self) -> float | None:
        """A guess of a text row's size from the first lines (for itemsPerShard by bytes)."""
        with self.fs.open(self.files[0], "rb") as handle:
            data = open_decompressed(handle, self.files[0]).read(256 * 1024)
        lines = data.count(b"\n")
        return len(data) / lines if lines else None

    def file_sizes(self) -> list[tuple[str, int]]:
        """(path, bytes) of every file, from the listing."""
        sizes = self.fs.sizes(self.files)
        return [(p, int(s or 0)) for p, s in zip(self.files, sizes, strict=True)]

    def _file_blocks(self, path: str, skip: int) -> Iterator[TextBlock]:
        """A file's blocks; those wholly within its first `skip` rows may come counted."""
        exact = frozenset([*(self.select.where or {}), *filter(None, [self.spec.id_field])])
        with self.fs.open(path, "rb") as handle:
            stream = open_decompressed(handle, path)
            if self.spec.format == InputFormat.CSV:  # every value is text already
                yield from csv_blocks(stream, count_before=max(0, skip))
            else:
                yield from jsonl_blocks(
                    stream, exact_text=exact, count_before=max(0, skip), keep=self.keep
                )

    def _matches(self, row: dict[str, Any]) -> bool:
        where = self.select.where or {}
        return all(str(row.get(k)) == v for k, v in where.items())

    def _id(self, row: dict[str, Any] | None) -> str | None:
        id_field = self.spec.id_field
        if id_field is None or row is None or row.get(id_field) is None:
            return None
        return str(row[id_field])

    def _files(self) -> Iterator[tuple[int, str, dict[str, Any] | None, tuple[str, str] | None]]:
        for number, path in enumerate(self.files):
            rel = self.relative(path)
            yield number, rel, {PATH_FIELD: rel, SOURCE_FIELD: FileRef(self.fs, path)}, None

    def _parquet(self, start: int, batch_rows: int) -> Iterator[ItemBatch]:
        columns = self._columns()
        position = row_number = 0
        for path in self.files:
            with self.fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                groups = list(range(parquet.num_row_groups))
                if not self.select.where:
                    # Positions are row numbers: skip whole row groups before `start`.
                    while groups and row_number + _rows(parquet, groups[0]) <= start:
                        row_number += _rows(parquet, groups.pop(0))
                    position = row_number
                if not groups:
                    continue
                # Decoded in the calling thread: Arrow's own pool would add threads that take
                # cores from the rest of the pipeline and from Triton (10% less CPU per item).
                batches = parquet.iter_batches(batch_rows, groups, columns, use_threads=False)
                for record in batches:
                    numbers: range | list[int] = range(row_number, row_number + record.num_rows)
                    row_number += record.num_rows
                    kept, numbers = self._where(record, numbers, _cast_text)
                    if kept.num_rows == 0:
                        continue
                    positions = np.arange(position, position + kept.num_rows, dtype=np.int64)
                    position += kept.num_rows
                    ids = self._arrow_ids(kept, numbers, _cast_text)
                    yield ItemBatch(positions, ids, table=kept)

    def _columns(self) -> list[str] | None:
        if not self.select.columns:
            return None
        extra = [self.spec.id_field, *(self.select.where or {})]
        return list(dict.fromkeys([*self.select.columns, *(c for c in extra if c)]))

    def _where(
        self, record: pa.RecordBatch, numbers: range | list[int], as_text: TextOf
    ) -> tuple[pa.RecordBatch, range | list[int]]:
        """The rows of `record` kept by `select.where`, with their row numbers."""
        mask = None
        for key, value in (self.select.where or {}).items():
            if key in record.schema.names:
                text = as_text(record.column(key))
            else:
                text = pa.nulls(len(record), pa.string())
            if as_text is _text_values:  # Python's str(None): rows compared so before Arrow
                text = pc.fill_null(text, "None")
            equal = pc.fill_null(pc.equal(text, value), False)
            mask = equal if mask is None else pc.and_(mask, equal)
        if mask is None:
            return record, numbers
        kept = [n for n, ok in zip(numbers, mask.to_pylist(), strict=True) if ok]
        return record.filter(mask), kept

    def _arrow_ids(
        self,
        record: pa.RecordBatch,
        numbers: range | list[int],
        as_text: TextOf,
        prefix: str | None = None,
    ) -> pa.Array:
        id_field = self.spec.id_field
        if id_field and id_field in record.schema.names:
            ids = as_text(record.column(id_field))
            if not ids.null_count:
                return ids
            # An item without an id falls back to its row number.
            return pc.coalesce(ids, _row_numbers(numbers, prefix))
        return _row_numbers(numbers, prefix)


TextOf = Callable[[pa.Array], pa.Array]


def _cast_text(column: pa.Array) -> pa.Array:
    """Parquet values as text: Arrow's cast."""
    return column if column.type == pa.string() else pc.cast(column, pa.string())


def _text_values(column: pa.Array) -> pa.Array:
    """JSONL/CSV values as text the way Python's `str` writes them (as ids and `where`
    compared them when rows were Python dicts); nulls stay null."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.cast(pa.string())
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.string())
    return pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())


def _row_numbers(numbers: range | list[int], prefix: str | None = None) -> pa.Array:
    text = pc.cast(pa.array(np.asarray(numbers, dtype=np.int64)), pa.string())
    return text if prefix is None else pc.binary_join_element_wise(prefix, text, "")


def _rows(parquet: pq.ParquetFile, group: int) -> int:
    return int(parquet.metadata.row_group(group).num_rows)


def take(batch: ItemBatch, keep: NDArray[np.intp]) -> ItemBatch:
    """The items of `batch` at indices `keep` (ascending)."""
    where = {int(i): n for n, i in enumerate(keep)} if batch.errors or batch.rows else {}
    indices = pa.array(keep)
    return ItemBatch(
        positions=batch.positions[keep],
        ids=batch.ids.take(indices),
        rows=[batch.rows[i] for i in where] if batch.rows is not None else None,
        table=batch.table.take(indices) if batch.table is not None else None,
        errors={where[i]: e for i, e in batch.errors.items() if i in where},
    )


def _rows_batch(
    pending: list[tuple[int, str, dict[str, Any] | None, tuple[str, str] | None]],
) -> ItemBatch:
    return ItemBatch(
        positions=np.array([p[0] for p in pending], dtype=np.int64),
        ids=pa.array([p[1] for p in pending], pa.string()),
        rows=[p[2] for p in pending],
        errors={i: p[3] for i, p in enumerate(pending) if p[3] is not None},
    )


def open_dataset(spec: InputSpec) -> Dataset:
    """Open the dataset; DatasetNotFoundError when nothing is there."""
    try:
        return Dataset(spec)
    except (FileNotFoundError, PermissionError) as error:
        raise DatasetNotFoundError(f"input.uri: cannot read {spec.uri}: {error}") from None
