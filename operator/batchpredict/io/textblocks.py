"""JSONL and CSV files parsed by Arrow's C++ readers, block by block.

A file is read in blocks of about BLOCK_BYTES cut at record ends. Each block is parsed by
`pyarrow.json` / `pyarrow.csv` into an Arrow table; only a block that Arrow cannot parse the way
Python's `json`/`csv` modules would (a malformed row, invalid UTF-8, a row count that does not
match its lines) is parsed again row by row in Python, so a malformed row fails alone with its
line number and every other row keeps its row number. Compressed files (`.gz`, `.zst`, `.bz2`,
`.lz4`) are decompressed on the fly, in C++.

The row-by-row parsers define the semantics (they are what the worker did before): JSONL skips
blank lines and each other line is one row; CSV's first record is its header, empty lines are
skipped, and every value is text.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

MALFORMED = "MALFORMED_ITEM"
# Blocks of this size keep Arrow's per-call cost small and memory flat.
BLOCK_BYTES = 4 * 1024 * 1024
# Arrow parses a block in parts of at least this size on its own pool.
PARALLEL_BYTES = 1024 * 1024
# A record end is looked for in at most this many bytes (a stray quote in a CSV file).
MAX_RECORD_BYTES = 64 * 1024 * 1024
# Compression suffix -> Arrow codec.
CODECS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".lz4": "lz4"}
_BLANK_LINE = re.compile(rb"\n[ \t\r]*(?=\n)")
_EMPTY_LINE = re.compile(rb"\n\r?(?=\n)")
# What `str.strip()` removes from an ASCII line (Python's test of a blank JSONL line).
_ASCII_BLANK_LINE = re.compile(rb"\n[ \t\r\x0b\x0c\x1c-\x1f]*(?=\n)")

Row = tuple[dict[str, Any] | None, tuple[str, str] | None]


@dataclass
class TextBlock:
    """Consecutive rows of one file: an Arrow `table`, or Python `rows` (row, error)."""

    table: pa.Table | None = None
    rows: list[Row] = field(default_factory=list)
    # Rows counted but not parsed (only when counting).
    counted: int | None = None

    @property
    def num_rows(self) -> int:
        if self.counted is not None:
            return self.counted
        return self.table.num_rows if self.table is not None else len(self.rows)


def codec_of(path: str) -> str | None:
    """The compression codec a file name says, or None."""
    lowered = path.lower()
    return next((c for s, c in CODECS.items() if lowered.endswith(s)), None)


def strip_codec(path: str) -> str:
    """The file name without its compression suffix (`a.jsonl.gz` -> `a.jsonl`)."""
    lowered = path.lower()
    suffix = next((s for s in CODECS if lowered.endswith(s)), "")
    return path[: len(path) - len(suffix)]


def open_decompressed(handle: IO[bytes], path: str) -> IO[bytes]:
    """`handle` as a stream of plain bytes (decompressed in C++ when the name says so)."""
    codec = codec_of(path)
    if codec is None:
        return handle
    return pa.CompressedInputStream(pa.PythonFile(handle, mode="r"), codec)  # type: ignore[no-any-return]


def _lines(data: bytes) -> int:
    """Lines as Python's universal newlines count them (`\\n`, `\\r\\n` and a lone `\\r`)."""
    if b"\r" not in data:
        return data.count(b"\n")
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _lone_cr(data: bytes) -> bool:
    return b"\r" in data and data.count(b"\r") != data.count(b"\r\n")


def _raw_blocks(
    stream: IO[bytes], block_bytes: int, cut: Callable[[bytes], int]
) -> Iterator[bytes]:
    """Blocks of the stream, each ending at a record end (`cut(data)`: the index after it)."""
    rest = b""
    while True:
        data = stream.read(block_bytes)
        if not data:
            if rest:
                yield rest
            return
        data = rest + data
        end = cut(data)
        if end <= 0 and len(data) > MAX_RECORD_BYTES:
            end = data.rfind(b"\n") + 1  # the parsers check what this cut may break
        if end <= 0:  # no record end yet: read more
            rest = data
            continue
        yield data[:end]
        rest = data[end:]


def _parallel(data: bytes) -> dict[str, Any]:
    """Arrow's read options for one block: parsed in parts by Arrow's pool (sized to the pod
    by the worker) when there are cores for it: half the wall time on 2 cores, same CPU."""
    threads = pa.cpu_count()
    if threads < 2 or len(data) < 2 * PARALLEL_BYTES:
        return {"use_threads": False, "block_size": len(data) + 1}
    return {"use_threads": True, "block_size": max(PARALLEL_BYTES, len(data) // threads + 1)}


def _utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _line_count(data: bytes, blank: re.Pattern[bytes], tail_blank: Callable[[bytes], bool]) -> int:
    """Lines of `data` that are not blank (as `blank` matches them after a newline)."""
    lines = data.count(b"\n")
    tail = data[data.rfind(b"\n") + 1 :]
    if tail and not tail_blank(tail):
        lines += 1
    return lines - len(blank.findall(b"\n" + data))


class _Chained(io.RawIOBase):
    """Byte blocks as one readable stream (to hand the rest of a file to Python's csv)."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks, self._buffer = blocks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            self._buffer = next(self._blocks, b"")
            if not self._buffer:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def _text(blocks: Iterator[bytes]) -> io.TextIOWrapper:
    stream = io.BufferedReader(_Chained(blocks), BLOCK_BYTES)
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")


# ---------------------------------------------------------------- JSONL


def jsonl_blocks(
    stream: IO[bytes],
    block_bytes: int | None = None,
    exact_text: frozenset[str] = frozenset(),
    count_before: int = 0,
    keep: frozenset[str] | None = None,
) -> Iterator[TextBlock]:
    """The rows of a JSONL stream, block by block (a JSON text has no raw newline).

    `exact_text`: fields whose values are compared as text (ids, `select.where`): a block
    where Arrow would type one as a float (`3` read as `3.0`) is read by Python instead.
    `count_before`: a block whose rows all come before this row may come counted, not parsed
    (a shard that starts further on skips them at the cost of finding line ends).
    `keep`: the fields the caller uses (None: all); once a block has typed them all, later
    blocks convert only those (40% less CPU for 2 of 17 fields; the rest is still checked).
    """
    line = rows = 0  # lines and rows before the block
    schema: pa.Schema | None = None  # the `keep` fields as an earlier block typed them
    cut = lambda d: d.rfind(b"\n") + 1  # noqa: E731
    for data in _raw_blocks(stream, block_bytes or BLOCK_BYTES, cut):
        if rows < count_before and data.isascii() and not _lone_cr(data):
            counted = _line_count(data, _ASCII_BLANK_LINE, lambda t: not t.decode().strip())
            if rows + counted <= count_before:
                yield TextBlock(counted=counted)
                line, rows = line + _lines(data), rows + counted
                continue
        block = _jsonl_arrow(data, exact_text, schema)
        if block is None:
            block = TextBlock(rows=list(_jsonl_rows(data, line)))
        elif keep is not None and block.table is not None:
            schema = _projection(block.table.schema, keep)
        yield block
        line, rows = line + _lines(data), rows + block.num_rows


def _projection(schema: pa.Schema, keep: frozenset[str]) -> pa.Schema | None:
    """The `keep` fields of `schema`, or None unless it types every one of them."""
    fields = [schema.field(name) for name in sorted(keep) if name in schema.names]
    if len(fields) != len(keep) or any(pa.types.is_null(f.type) for f in fields):
        return None
    return pa.schema(fields)


def _jsonl_arrow(
    data: bytes, exact_text: frozenset[str], schema: pa.Schema | None
) -> TextBlock | None:
    """The block parsed by Arrow, or None when Python would parse it differently."""
    if not _utf8(data) or _lone_cr(data):
        return None
    options = pa_json.ReadOptions(**_parallel(data))
    table = None
    if schema is not None:  # other fields are parsed (checked) but not converted
        only = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        table = _read_json(data, options, only)
    if table is None:  # types inferred (a type that changed, or no projection)
        table = _read_json(data, options, None)
    if table is None:
        return None
    # Arrow skips blank lines as Python does, but also reads `{..} {..}` on one line as two
    # rows (Python: malformed): every other line must be exactly one row.
    if table.num_rows != _line_count(data, _BLANK_LINE, lambda t: not t.strip()):
        return None
    names = exact_text & set(table.column_names)
    if any(not _exact_type(table.schema.field(name).type) for name in names):
        return None
    return TextBlock(table=table.combine_chunks())


def _read_json(
    data: bytes, options: pa_json.ReadOptions, parse: pa_json.ParseOptions | None
) -> pa.Table | None:
    try:
        return pa_json.read_json(io.BytesIO(data), read_options=options, parse_options=parse)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _exact_type(kind: pa.DataType) -> bool:
    """Whether Arrow keeps what Python's `str` would write of these JSON values."""
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
    )


def _jsonl_rows(data: bytes, before: int) -> Iterator[Row]:
    text = data.decode("utf-8", errors="replace")
    for number, line in enumerate(io.StringIO(text, newline=""), start=before + 1):
        yield from _jsonl_row(line, number)


def _jsonl_row(line: str, number: int) -> Iterator[Row]:
    if not line.strip():
        return
    try:
        row = json.loads(line)
    except ValueError as error:
        yield None, (MALFORMED, f"line {number} is not valid JSON: {error}")
        return
    if not isinstance(row, dict):
        yield None, (MALFORMED, f"line {number} is not a JSON object")
        return
    yield row, None


def first_jsonl_row(stream: IO[bytes]) -> dict[str, Any] | None:
    """The first JSON object of a JSONL stream (field names for the tensor mapping)."""
    for data in _raw_blocks(stream, 64 * 1024, lambda d: d.rfind(b"\n") + 1):
        for row, _ in _jsonl_rows(data, 0):
            if row is not None:
                return row
    return None


# ---------------------------------------------------------------- CSV


def csv_header(stream: IO[bytes]) -> list[str]:
    """The header of a CSV stream (its first record)."""
    reader = csv.reader(_text(_raw_blocks(stream, 64 * 1024, len)))
    return next(reader, None) or []


def csv_blocks(
    stream: IO[bytes], block_bytes: int | None = None, count_before: int = 0
) -> Iterator[TextBlock]:
    """The rows of a CSV stream (its header first), block by block. A block without quotes
    whose rows all come before row `count_before` comes counted (`TextBlock(counted=n)`)."""
    blocks = _raw_blocks(stream, block_bytes or BLOCK_BYTES, _csv_cut)
    first = next(blocks, b"")
    end = first.find(b"\n") + 1 or len(first)
    head = first[:end]
    header = next(csv.reader(io.StringIO(head.decode("utf-8", errors="replace"), newline="")), None)
    if header is None:
        return
    if head.count(b'"') % 2 or _lone_cr(head):
        # A header across lines: Python's csv from the start (rare enough not to matter).
        yield from _row_blocks(_python_rows(_prepend(first, blocks), header, skip_header=True))
        return
    line, rows = 1, 0  # lines and rows before the block
    chained = _prepend(first[end:], blocks)
    for data in chained:
        if rows < count_before and b'"' not in data and not _lone_cr(data):
            # Without quotes, each non-empty line is one record.
            counted = _line_count(data, _EMPTY_LINE, lambda t: t in {b"", b"\r"})
            if rows + counted <= count_before:
                yield TextBlock(counted=counted)
                line, rows = line + _lines(data), rows + counted
                continue
        block = _csv_arrow(data, header)
        if block is None and b'"' in data:
            # A quote may hide where records end: Python from here to the end of the file.
            yield from _row_blocks(_python_rows(_prepend(data, chained), header, line))
            return
        if block is None:
            # Without quotes every newline ends a record: Python for this block only.
            block = TextBlock(rows=list(_csv_reader_rows(_csv_reader(data), header, line)))
        yield block
        line, rows = line + _lines(data), rows + block.num_rows


def _row_blocks(rows: Iterator[Row], size: int = 16384) -> Iterator[TextBlock]:
    """Python rows in blocks of `size` (memory stays flat over the rest of a file)."""
    while block := list(itertools.islice(rows, size)):
        yield TextBlock(rows=block)


def _prepend(data: bytes, blocks: Iterator[bytes]) -> Iterator[bytes]:
    if data:
        yield data
    yield from blocks


def _csv_cut(data: bytes) -> int:
    """Index after the last newline outside quotes (by quote parity, as RFC 4180 quotes)."""
    if b'"' not in data:
        return data.rfind(b"\n") + 1
    codes = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(codes == ord('"'))
    newlines = np.flatnonzero(codes == ord("\n"))
    # A newline is outside quotes when an even number of quotes come before it.
    ends = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
    return int(ends[-1]) + 1 if len(ends) else 0


def _csv_arrow(data: bytes, header: list[str]) -> TextBlock | None:
    """The block parsed by Arrow (every value text), or None when Python would differ."""
    if _lone_cr(data) or len(set(header)) != len(header) or not header:
        return None  # lone `\r` line ends; duplicate names (Python keeps the last)
    quoted = b'"' in data
    try:
        table = pa_csv.read_csv(
            io.BytesIO(data),
            read_options=pa_csv.ReadOptions(column_names=header, **_parallel(data)),
            parse_options=pa_csv.ParseOptions(newlines_in_values=quoted),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    # Python's csv skips only empty lines (a line of spaces is a row of one field).
    if table.num_rows != _line_count(data, _EMPTY_LINE, lambda t: t in {b"", b"\r"}):
        return None
    if quoted and any(_has_newline(column) for column in table.columns):
        return None  # a quoted newline: a record across lines, maybe across blocks
    return TextBlock(table=table.combine_chunks())


def _has_newline(column: pa.ChunkedArray) -> bool:
    return bool(pc.any(pc.match_substring_regex(column, "[\r\n]")).as_py())


def _csv_reader(data: bytes) -> Any:
    return csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))


def _python_rows(
    blocks: Iterator[bytes], header: list[str], before: int = 0, *, skip_header: bool = False
) -> Iterator[Row]:
    reader = csv.reader(_text(blocks))
    if skip_header:
        next(reader, None)
    yield from _csv_reader_rows(reader, header, before)


def _csv_reader_rows(reader: Any, header: list[str], before: int) -> Iterator[Row]:
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            number = before + reader.line_num
            message = f"line {number} has {len(row)} fields, the header has {len(header)}"
            yield None, (MALFORMED, message)
            continue
        yield dict(zip(header, row, strict=True)), None


# ---------------------------------------------------------------- counting without parsing


def count_jsonl(stream: IO[bytes]) -> int:
    """Rows of a JSONL stream (what `jsonl_blocks` yields), counted from its line ends: an
    ASCII block is not parsed at all, anything else is parsed as the reader would."""
    return sum(block.num_rows for block in jsonl_blocks(stream, count_before=sys.maxsize))


def count_csv(stream: IO[bytes]) -> int:
    """Rows of a CSV stream (what `csv_blocks` yields); blocks without quotes are counted from
    their line ends (each non-empty line is one record), the others parsed."""
    return sum(block.num_rows for block in csv_blocks(stream, count_before=sys.maxsize))
