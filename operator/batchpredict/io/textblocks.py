"""JSONL and CSV files parsed by Arrow's C++ readers, block by block.

A file is read in blocks of about BLOCK_BYTES cut at record ends. Each block is parsed by
`pyarrow.json` / `pyarrow.csv` into an Arrow table; only a block that Arrow cannot parse the way
Python's `json`/`csv` modules would (a malformed row, invalid UTF-8, a row count that does not
match its lines) is parsed again row by row in Python, so a malformed row fails alone with its
line number and every other row keeps its row number. Compressed files (`.gz`, `.zst`, `.bz2`,
`.lz4`) are decompressed on the fly, in C++.

The row-by-row parsers define the semantics (they are what the worker did before): JSONL skips
blank lines and each other line is one row; CSV's first record is its header, empty lines are
skipped, and every value is text. This module holds what both formats share (reading blocks,
decompressing, counting lines); jsonlblocks.py and csvblocks.py the formats.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

import pyarrow as pa
from isal import igzip

MALFORMED = "MALFORMED_ITEM"
# Blocks of this size keep Arrow's per-call cost small and memory flat.
BLOCK_BYTES = 4 * 1024 * 1024
# Arrow parses a block in parts of at least this size on its own pool.
PARALLEL_BYTES = 1024 * 1024
# A record end is looked for in at most this many bytes (a stray quote in a CSV file).
MAX_RECORD_BYTES = 64 * 1024 * 1024
# Compression suffix -> Arrow codec.
CODECS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".lz4": "lz4"}
BLANK_LINE = re.compile(rb"\n[ \t\r]*(?=\n)")
EMPTY_LINE = re.compile(rb"\n\r?(?=\n)")
# What `str.strip()` removes from an ASCII line (Python's test of a blank JSONL line).
ASCII_BLANK_LINE = re.compile(rb"\n[ \t\r\x0b\x0c\x1c-\x1f]*(?=\n)")

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
    """`handle` as a stream of plain bytes (decompressed in C++ when the name says so): gzip
    by ISA-L (python-isal, without the GIL), the other codecs by Arrow."""
    codec = codec_of(path)
    if codec is None:
        return handle
    if codec == "gzip":  # 25% less worker CPU per item than Arrow's zlib (benchmarks/)
        return igzip.IGzipFile(fileobj=handle, mode="rb")  # type: ignore[no-untyped-call,return-value]
    return pa.CompressedInputStream(pa.PythonFile(handle, mode="r"), codec)  # type: ignore[no-any-return]


def count_lines(data: bytes) -> int:
    """Lines as Python's universal newlines count them (`\\n`, `\\r\\n` and a lone `\\r`)."""
    if b"\r" not in data:
        return data.count(b"\n")
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def lone_cr(data: bytes) -> bool:
    return b"\r" in data and data.count(b"\r") != data.count(b"\r\n")


def raw_blocks(stream: IO[bytes], block_bytes: int, cut: Callable[[bytes], int]) -> Iterator[bytes]:
    """Blocks of the stream, each ending at a record end (`cut(data)`: the index after it)."""
    rest = b""
    for read in _read_ahead(stream, block_bytes):
        data = rest + read
        end = cut(data)
        if end <= 0 and len(data) > MAX_RECORD_BYTES:
            end = data.rfind(b"\n") + 1  # the parsers check what this cut may break
        if end <= 0:  # no record end yet: read more
            rest = data
            continue
        yield data[:end]
        rest = data[end:]
    if rest:
        yield rest


def _read_ahead(stream: IO[bytes], size: int) -> Iterator[bytes]:
    """`stream.read(size)` to the end, the next read (network, decompression: without the
    GIL) under way in a thread while the caller parses the last one."""
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as reader:
        pending = reader.submit(stream.read, size)
        while data := pending.result():
            pending = reader.submit(stream.read, size)
            yield data


def parallel_options(data: bytes) -> dict[str, Any]:
    """Arrow's read options for one block: parsed in parts by Arrow's pool (sized to the pod
    by the worker) when there are cores for it: half the wall time on 2 cores, same CPU."""
    threads = pa.cpu_count()
    if threads < 2 or len(data) < 2 * PARALLEL_BYTES:
        return {"use_threads": False, "block_size": len(data) + 1}
    return {"use_threads": True, "block_size": max(PARALLEL_BYTES, len(data) // threads + 1)}


def is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def rows_in(data: bytes, blank: re.Pattern[bytes], tail_blank: Callable[[bytes], bool]) -> int:
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


def text_stream(blocks: Iterator[bytes]) -> io.TextIOWrapper:
    stream = io.BufferedReader(_Chained(blocks), BLOCK_BYTES)
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
