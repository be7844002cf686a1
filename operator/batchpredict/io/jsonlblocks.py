"""JSONL through Arrow's JSON reader, block by block (see textblocks.py for the contract).

Python's `json` defines what a row is: blank lines are skipped, every other line is one row,
and a line that is not a JSON object is a malformed row with its line number.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

import pyarrow as pa
import pyarrow.json as pa_json

from batchpredict.io import textblocks
from batchpredict.io.textblocks import (
    ASCII_BLANK_LINE,
    BLANK_LINE,
    MALFORMED,
    Row,
    TextBlock,
    count_lines,
    is_utf8,
    lone_cr,
    parallel_options,
    raw_blocks,
    rows_in,
)


def jsonl_blocks(
    stream: IO[bytes],
    block_bytes: int | None = None,
    *,
    exact_text: frozenset[str] = frozenset(),
    count_before: int = 0,
    keep: frozenset[str] | None = None,
    origin: str = "",
) -> Iterator[TextBlock]:
    """The rows of a JSONL stream, block by block (a JSON text has no raw newline).

    `exact_text`: fields whose values are compared as text (ids, `select.where`): a block
    where Arrow would type one as a float (`3` read as `3.0`) is read by Python instead.
    `count_before`: a block whose rows all come before this row may come counted, not parsed
    (a shard that starts further on skips them at the cost of finding line ends).
    `keep`: the fields the caller uses (None: all); once a block has typed them all, later
    blocks convert only those (40% less CPU for 2 of 17 fields; the rest is still checked).
    `origin`: what line numbers count from, for messages (` of a.jsonl counted from byte 9`).
    """
    line = rows = 0  # lines and rows before the block
    schema: pa.Schema | None = None  # the `keep` fields as an earlier block typed them
    cut = lambda d: d.rfind(b"\n") + 1  # noqa: E731
    for data in raw_blocks(stream, block_bytes or textblocks.BLOCK_BYTES, cut):
        if rows < count_before and data.isascii() and not lone_cr(data):
            counted = rows_in(data, ASCII_BLANK_LINE, lambda t: not t.decode().strip())
            if rows + counted <= count_before:
                yield TextBlock(counted=counted)
                line, rows = line + count_lines(data), rows + counted
                continue
        block = _jsonl_arrow(data, exact_text, schema)
        if block is None:
            block = TextBlock(rows=list(_jsonl_rows(data, line, origin)))
        elif keep is not None and block.table is not None:
            schema = _projection(block.table.schema, keep)
        yield block
        line, rows = line + count_lines(data), rows + block.num_rows


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
    if not is_utf8(data) or lone_cr(data):
        return None
    options = pa_json.ReadOptions(**parallel_options(data))
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
    if table.num_rows != rows_in(data, BLANK_LINE, lambda t: not t.strip()):
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


def _jsonl_rows(data: bytes, before: int, origin: str = "") -> Iterator[Row]:
    text = data.decode("utf-8", errors="replace")
    for number, line in enumerate(io.StringIO(text, newline=""), start=before + 1):
        yield from _jsonl_row(line, number, origin)


def _jsonl_row(line: str, number: int, origin: str) -> Iterator[Row]:
    if not line.strip():
        return
    try:
        row = json.loads(line)
    except ValueError as error:
        yield None, (MALFORMED, f"line {number}{origin} is not valid JSON: {error}")
        return
    if not isinstance(row, dict):
        yield None, (MALFORMED, f"line {number}{origin} is not a JSON object")
        return
    yield row, None


def first_jsonl_row(stream: IO[bytes]) -> dict[str, Any] | None:
    """The first JSON object of a JSONL stream (field names for the tensor mapping)."""
    for data in raw_blocks(stream, 64 * 1024, lambda d: d.rfind(b"\n") + 1):
        for row, _ in _jsonl_rows(data, 0):
            if row is not None:
                return row
    return None


def count_jsonl(stream: IO[bytes]) -> int:
    """Rows of a JSONL stream (what `jsonl_blocks` yields), counted from its line ends: an
    ASCII block is not parsed at all, anything else is parsed as the reader would."""
    return sum(block.num_rows for block in jsonl_blocks(stream, count_before=sys.maxsize))
