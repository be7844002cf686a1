"""CSV through Arrow's CSV reader, block by block (see textblocks.py for the contract).

Python's `csv` defines what a row is: a file's first record is its header, empty lines are
skipped, every value is text, and a record whose field count differs from the header's is a
malformed row with its line number. Blocks are cut at newlines outside quotes; a block with a
quote that Arrow cannot read as Python would hands the rest of its file to Python's `csv`.
"""

from __future__ import annotations

import csv
import io
import itertools
import sys
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from batchpredict.io import textblocks
from batchpredict.io.textblocks import (
    EMPTY_LINE,
    MALFORMED,
    Row,
    TextBlock,
    count_lines,
    lone_cr,
    parallel_options,
    raw_blocks,
    rows_in,
    text_stream,
)


def csv_header(stream: IO[bytes]) -> list[str]:
    """The header of a CSV stream (its first record)."""
    reader = csv.reader(text_stream(raw_blocks(stream, 64 * 1024, len)))
    return next(reader, None) or []


def csv_blocks(
    stream: IO[bytes],
    block_bytes: int | None = None,
    count_before: int = 0,
    header: list[str] | None = None,
    origin: str = "",
) -> Iterator[TextBlock]:
    """The rows of a CSV stream (its header first), block by block. A block without quotes
    whose rows all come before row `count_before` comes counted (`TextBlock(counted=n)`).
    `header`: the stream has none (a byte range after the file's start); `origin`: what
    line numbers count from, for messages."""
    blocks = raw_blocks(stream, block_bytes or textblocks.BLOCK_BYTES, _csv_cut)
    if header is None:
        first = next(blocks, b"")
        end = first.find(b"\n") + 1 or len(first)
        head = first[:end]
        text = head.decode("utf-8", errors="replace")
        header = next(csv.reader(io.StringIO(text, newline="")), None)
        if header is None:
            return
        if head.count(b'"') % 2 or lone_cr(head):
            # A header across lines: Python's csv from the start (rare enough not to matter).
            rows_ = _python_rows(_prepend(first, blocks), header, origin=origin, skip_header=True)
            yield from _row_blocks(rows_)
            return
        line, rows = 1, 0  # lines and rows before the block
        chained = _prepend(first[end:], blocks)
    else:
        line, rows, chained = 0, 0, blocks
    for data in chained:
        if rows < count_before and b'"' not in data and not lone_cr(data):
            # Without quotes, each non-empty line is one record.
            counted = rows_in(data, EMPTY_LINE, lambda t: t in {b"", b"\r"})
            if rows + counted <= count_before:
                yield TextBlock(counted=counted)
                line, rows = line + count_lines(data), rows + counted
                continue
        block = _csv_arrow(data, header)
        if block is None and b'"' in data:
            # A quote may hide where records end: Python from here to the end of the file.
            yield from _row_blocks(_python_rows(_prepend(data, chained), header, line, origin))
            return
        if block is None:
            # Without quotes every newline ends a record: Python for this block only.
            reader = _csv_reader(data)
            block = TextBlock(rows=list(_csv_reader_rows(reader, header, line, origin)))
        yield block
        line, rows = line + count_lines(data), rows + block.num_rows


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
    if lone_cr(data) or len(set(header)) != len(header) or not header:
        return None  # lone `\r` line ends; duplicate names (Python keeps the last)
    quoted = b'"' in data
    try:
        table = pa_csv.read_csv(
            io.BytesIO(data),
            read_options=pa_csv.ReadOptions(column_names=header, **parallel_options(data)),
            parse_options=pa_csv.ParseOptions(newlines_in_values=quoted),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    # Python's csv skips only empty lines (a line of spaces is a row of one field).
    if table.num_rows != rows_in(data, EMPTY_LINE, lambda t: t in {b"", b"\r"}):
        return None
    if quoted and any(_has_newline(column) for column in table.columns):
        return None  # a quoted newline: a record across lines, maybe across blocks
    return TextBlock(table=table.combine_chunks())


def _has_newline(column: pa.ChunkedArray) -> bool:
    return bool(pc.any(pc.match_substring_regex(column, "[\r\n]")).as_py())


def _csv_reader(data: bytes) -> Any:
    return csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))


def _python_rows(
    blocks: Iterator[bytes],
    header: list[str],
    before: int = 0,
    origin: str = "",
    *,
    skip_header: bool = False,
) -> Iterator[Row]:
    reader = csv.reader(text_stream(blocks))
    if skip_header:
        next(reader, None)
    yield from _csv_reader_rows(reader, header, before, origin)


def _csv_reader_rows(
    reader: Any, header: list[str], before: int, origin: str = ""
) -> Iterator[Row]:
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            number = before + reader.line_num
            message = f"line {number}{origin} has {len(row)} fields, the header has {len(header)}"
            yield None, (MALFORMED, message)
            continue
        yield dict(zip(header, row, strict=True)), None


def count_csv(stream: IO[bytes]) -> int:
    """Rows of a CSV stream (what `csv_blocks` yields); blocks without quotes are counted from
    their line ends (each non-empty line is one record), the others parsed."""
    return sum(block.num_rows for block in csv_blocks(stream, count_before=sys.maxsize))
