"""Byte-range splits of JSONL/CSV files: planned from the listing, aligned to line ends by
the reader (as Hadoop's and Spark's text input splits are).

A split [start, end) of a file owns every line that *starts* in it. Its reader skips the
partial line at `start` (unless start == 0) and reads past `end` to finish its last line, so
the byte where a split's lines begin is a function of the file and the cut point only: two
neighbouring splits agree on it, and every line belongs to exactly one split, whatever the
line lengths (a split may own no line at all). Only `\\n` ends a line here (`\\r\\n` ends
with one too). A compressed file cannot be entered in the middle: it is one split.

CSV records that hold a newline inside quotes cannot be split this way (Spark's
`multiLine=false` has the same rule): such a file is planned by rows (`byteRanges: false`).

An item's position is `shard * SPLIT_STRIDE + k` for the k-th item its split holds, so
positions stay unique and stable across retry rounds without knowing how many items the
splits before it hold.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, cast

from batchpredict.io.textblocks import codec_of

# Positions of shard i are i * SPLIT_STRIDE + k: room for 2^40 items per split and
# 100,000 shards within int64.
SPLIT_STRIDE = 1 << 40
# Reads of a split (a text block's size: no copy between them and the blocks).
_READ_BYTES = 4 << 20


@dataclass(frozen=True)
class ByteSplit:
    """Bytes [start, end) of `path`; `end` None: to the end (a compressed file, whole)."""

    path: str
    start: int
    end: int | None

    def to_wire(self) -> list[object]:
        return [self.path, self.start, self.end]

    @classmethod
    def from_wire(cls, data: Sequence[object]) -> ByteSplit:
        path, start, end = data
        return cls(str(path), int(str(start)), None if end is None else int(str(end)))


def plan_byte_splits(files: Sequence[tuple[str, int]], wanted: int) -> list[ByteSplit]:
    """About `wanted` splits of equal size over `files` (path, size); a compressed file is
    one split, an empty file none. Pure: the listing's sizes are all it needs."""
    plain = [(p, s) for p, s in files if codec_of(p) is None and s > 0]
    whole = [p for p, _ in files if codec_of(p) is not None]
    splits = [ByteSplit(p, 0, None) for p in whole]
    plain_bytes = sum(s for _, s in plain)
    if plain_bytes:
        # Split size from what is left once each compressed file took one shard.
        parts = max(wanted - len(whole), 1)
        size = max(1, math.ceil(plain_bytes / parts))
        for path, file_size in plain:
            splits += [
                ByteSplit(path, start, min(start + size, file_size))
                for start in range(0, file_size, size)
            ]
    order = {p: i for i, (p, _) in enumerate(files)}
    return sorted(splits, key=lambda s: (order[s.path], s.start))


def split_bytes(handle: IO[bytes], start: int, end: int) -> Iterator[bytes]:
    """The bytes of the lines that start in [start, end) of a seekable file: from the first
    line start at or after `start` to the end of the line holding byte end-1."""
    if end <= start:
        return
    position, data = 0, b""
    if start > 0:
        # A line starts at `start` only if byte start-1 ends one: look from there.
        handle.seek(start - 1)
        position = start - 1
        while True:
            data = handle.read(_READ_BYTES)
            if not data:
                return  # no line starts in the rest of the file
            newline = data.find(b"\n")
            if newline >= 0:
                position += newline + 1
                data = data[newline + 1 :]
                break
            position += len(data)
    if position >= end:
        return  # the split holds no line start
    last = end - 1  # the split's last line is the one holding this byte
    while True:
        if not data:
            data = handle.read(_READ_BYTES)
            if not data:
                return
        if position + len(data) > last:
            newline = data.find(b"\n", max(last - position, 0))
            if newline >= 0:
                yield data[: newline + 1]
                return
        yield data
        position += len(data)
        data = b""


class _Chunks(io.RawIOBase):
    """A split's bytes as a stream whose reads return its chunks as they come (the block
    readers take reads of any size, so nothing is copied to fit a size)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # any size will do for the block readers
        return next(self._chunks, b"")


def split_stream(handle: IO[bytes], start: int, end: int) -> IO[bytes]:
    """`split_bytes` as a stream for the block readers."""
    return cast(IO[bytes], _Chunks(split_bytes(handle, start, end)))
