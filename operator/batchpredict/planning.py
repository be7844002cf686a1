"""Shard planning: a pure function the plan step and the operator share.

By rows (Parquet, files, DICOM, and small text datasets): a run's items are numbered
0..total-1 in dataset order (after `select`); a shard is a contiguous range of those
positions, shard sizes differ by at most one item, unless the dataset has groups a shard
must hold whole (a DICOM series' instances): then shards start at group boundaries
(`starts`, written to plan.json as `shardStarts`).
By byte ranges (JSONL/CSV, see io/splits.py): shard i is a byte range of one file, planned from
the listing without reading it; its items have positions i * SPLIT_STRIDE + k, and how many
there are is learned when the shard counts its range (`sizes`). The total is then unknown
until every shard has counted.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
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
    # Each shard's first position when shards follow group boundaries; None: even cuts.
    starts: tuple[int, ...] | None = None
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
        if self.starts is not None and (
            len(self.starts) != self.shards
            or self.starts[0] != 0
            or any(b <= a for a, b in zip(self.starts, self.starts[1:], strict=False))
            or self.starts[-1] >= max(self.total_items or 0, 1)
        ):
            raise ValueError(f"impossible shard starts: {self}")

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
        if self.starts is not None:
            last = shard + 1 == self.shards
            return range(self.starts[shard], total if last else self.starts[shard + 1])
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
        if self.starts is not None:
            return bisect.bisect_right(self.starts, position) - 1
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

    def starts_wire(self) -> dict[str, list[int]]:
        """For plan.json only (too long for a termination message): the shards' starts."""
        return {} if self.starts is None else {"shardStarts": list(self.starts)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ShardPlan:
        total = data.get("total")
        splits = tuple(ByteSplit.from_wire(s) for s in data.get("splits") or [])
        starts = data.get("shardStarts")
        return cls(
            total_items=None if total is None else int(str(total)),
            shards=int(str(data["shards"])),
            chunk_items=int(str(data.get("chunkItems", DEFAULT_CHUNK_ITEMS))),
            starts=tuple(int(s) for s in starts) if isinstance(starts, list) else None,
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
    total_items: int,
    spec: BatchPredictionSpec,
    chunk_items: int = DEFAULT_CHUNK_ITEMS,
    groups: Sequence[int] | None = None,
) -> ShardPlan:
    """The shard plan for a dataset of `total_items` items; with `groups` (sizes of
    consecutive items a shard holds whole), shards start only where a group starts."""
    if total_items < 0:
        raise ValueError(f"total_items must be >= 0 (got {total_items})")
    shards = shard_count(total_items, spec)
    if groups is None or total_items == 0:
        return ShardPlan(total_items, shards, chunk_items)
    if sum(groups) != total_items:
        raise ValueError(f"groups hold {sum(groups)} items, not {total_items}")
    starts = group_starts(groups, min(shards, len(groups)))
    return ShardPlan(total_items, len(starts), chunk_items, starts)


def group_starts(groups: Sequence[int], shards: int) -> tuple[int, ...]:
    """`shards` shard starts (at most one per group), each at the group boundary nearest an
    even cut that still leaves a boundary for every later shard."""
    bounds = [0]
    for size in groups:
        if size:
            bounds.append(bounds[-1] + size)
    total, inner = bounds[-1], bounds[1:-1]  # where a shard may start, besides 0
    cuts = min(shards, len(inner) + 1) - 1
    starts, low = [0], 0
    for k in range(1, cuts + 1):
        target = k * total / (cuts + 1)
        high = len(inner) - (cuts - k)  # leave one boundary for each later cut
        i = bisect.bisect_left(inner, target, low, high)
        near = [j for j in (i - 1, i) if low <= j < high]
        j = min(near, key=lambda j: abs(inner[j] - target))
        starts.append(inner[j])
        low = j + 1
    return tuple(starts)


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
