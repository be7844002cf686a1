"""Shard planning: a pure function the plan step and the operator share.

By rows (Parquet, files, and small text datasets): a run's items are numbered 0..total-1 in
dataset order (after `select`); a shard is a contiguous range of those positions, shard sizes
differ by at most one item.
By byte ranges (JSONL/CSV, see io/splits.py): shard i is a byte range of one file, planned from
the listing without reading it; its items have positions i * SPLIT_STRIDE + k, and how many
there are is learned when the shard counts its range (`sizes`). The total is then unknown
until every shard has counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.io.splits import SPLIT_STRIDE, ByteSplit, plan_byte_splits

# Shards outnumber pods so a slow pod does not hold the whole Job (DESIGN section 3).
SHARDS_PER_POD = 4
# Items per output chunk: what a killed worker may lose and redo at most.
DEFAULT_CHUNK_ITEMS = 10_000
# An Indexed Job allows at most 100,000 completions: more shards make bigger shards instead.
MAX_SHARDS = 100_000


@dataclass(frozen=True)
class ShardPlan:
    """How a run's `total_items` are cut into `shards` contiguous ranges (by rows), or the
    byte ranges `splits` (by bytes: `total_items` None until every split's size is known)."""

    total_items: int | None
    shards: int
    chunk_items: int = DEFAULT_CHUNK_ITEMS
    by_bytes: bool = False
    splits: tuple[ByteSplit, ...] = ()
    # Items of each byte-range split, where counted.
    sizes: Mapping[int, int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        impossible = self.shards < 1 or self.chunk_items < 1
        if self.total_items is None and not self.by_bytes:
            impossible = True
        if impossible or (self.total_items is not None and self.total_items < 0):
            raise ValueError(f"impossible shard plan: {self}")
        if self.splits and len(self.splits) != self.shards:
            raise ValueError(f"{len(self.splits)} byte ranges for {self.shards} shards")

    def shard_range(self, shard: int) -> range:
        """Item positions of `shard` (empty only when the dataset, or a byte range, has no
        item); by bytes, only once the shard's size is known (`with_sizes`)."""
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} is outside the plan's {self.shards} shards")
        if self.by_bytes:
            size = self.sizes.get(shard)
            if size is None:
                raise ValueError(f"the items of shard {shard} are not counted yet")
            return range(shard * SPLIT_STRIDE, shard * SPLIT_STRIDE + size)
        total = self.total_items or 0
        start = shard * total // self.shards
        stop = (shard + 1) * total // self.shards
        return range(start, stop)

    def shard_size(self, shard: int) -> int | None:
        """Items of `shard`, None while a byte range is not counted."""
        if self.by_bytes and shard not in self.sizes:
            return None
        return len(self.shard_range(shard))

    def shard_of(self, position: int) -> int:
        """The shard holding item `position` (inverse of `shard_range`)."""
        if self.by_bytes:
            return position // SPLIT_STRIDE
        total = self.total_items or 0
        if not 0 <= position < total:
            raise ValueError(f"item position {position} is outside 0..{total - 1}")
        shard = (position * self.shards) // total
        # Integer rounding can put the guess one shard too low.
        while position >= self.shard_range(shard).stop:
            shard += 1
        return shard

    def with_sizes(self, sizes: Mapping[int, int]) -> ShardPlan:
        """The plan knowing these byte ranges' item counts too (the total once all are)."""
        known = {**self.sizes, **sizes}
        total = sum(known.values()) if len(known) == self.shards else self.total_items
        return replace(self, sizes=known, total_items=total)

    def to_wire(self) -> dict[str, Any]:
        """The termination message's part (byte ranges are in plan.json only)."""
        wire: dict[str, Any] = {
            "total": self.total_items,
            "shards": self.shards,
            "chunkItems": self.chunk_items,
        }
        if self.by_bytes:
            wire["byteRanges"] = True
        return wire

    def splits_to_wire(self) -> list[list[object]]:
        return [s.to_wire() for s in self.splits]

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ShardPlan:
        total = data.get("total")
        splits = tuple(ByteSplit.from_wire(s) for s in data.get("splits") or [])
        return cls(
            total_items=None if total is None else int(str(total)),
            shards=int(str(data["shards"])),
            chunk_items=int(str(data.get("chunkItems", DEFAULT_CHUNK_ITEMS))),
            by_bytes=bool(data.get("byteRanges")),
            splits=splits,
        )


def shard_count(total_items: int, spec: BatchPredictionSpec) -> int:
    """spec.shards, else ceil(total/itemsPerShard), else 4 x parallelism; within 1..total
    and at most MAX_SHARDS (itemsPerShard then grows to fit)."""
    if spec.shards is not None:
        wanted = spec.shards
    elif spec.items_per_shard is not None:
        wanted = math.ceil(total_items / spec.items_per_shard)
    else:
        wanted = SHARDS_PER_POD * spec.parallelism
    # Never an empty shard (except for an empty dataset, which still gets one).
    return max(1, min(wanted, total_items, MAX_SHARDS))


def plan_shards(
    total_items: int, spec: BatchPredictionSpec, chunk_items: int = DEFAULT_CHUNK_ITEMS
) -> ShardPlan:
    """The shard plan for a dataset of `total_items` items."""
    if total_items < 0:
        raise ValueError(f"total_items must be >= 0 (got {total_items})")
    return ShardPlan(total_items, shard_count(total_items, spec), chunk_items)


def plan_byte_shards(
    files: list[tuple[str, int]],
    spec: BatchPredictionSpec,
    chunk_items: int = DEFAULT_CHUNK_ITEMS,
    bytes_per_item: float | None = None,
) -> ShardPlan:
    """Byte-range shards over `files` (path, size): spec.shards ranges, else as many as
    itemsPerShard asks with `bytes_per_item` (a guess from the first lines), else 4 x
    parallelism; at most MAX_SHARDS."""
    total_bytes = sum(size for _, size in files)
    if spec.shards is not None:
        wanted = spec.shards
    elif spec.items_per_shard is not None and bytes_per_item:
        wanted = math.ceil(total_bytes / bytes_per_item / spec.items_per_shard)
    else:
        wanted = SHARDS_PER_POD * spec.parallelism
    wanted = max(1, min(wanted, MAX_SHARDS))
    splits = plan_byte_splits(files, wanted)
    if len(splits) > MAX_SHARDS:
        raise ValueError(
            f"{len(splits)} compressed files: at most {MAX_SHARDS} (one shard each); "
            "combine them or set spec.input.byteRanges: false"
        )
    if not splits:  # only empty files: one empty range keeps the plan's shape
        splits = [ByteSplit(files[0][0], 0, 0)]
    return ShardPlan(None, len(splits), chunk_items, by_bytes=True, splits=tuple(splits))
