"""Shard planning: a pure function the plan step and the operator share.

A run's items are numbered 0..total-1 in dataset order (after `select`). A shard is a
contiguous range of those positions; shard sizes differ by at most one item, unless the
dataset has groups a shard must hold whole (a DICOM series' instances): then shards start at
group boundaries (`starts`, written to plan.json as `shardStarts`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from batchpredict.api.v1alpha1.spec import BatchPredictionSpec

# Shards outnumber pods so a slow pod does not hold the whole Job (DESIGN section 3).
SHARDS_PER_POD = 4
# Items per output chunk: what a killed worker may lose and redo at most.
DEFAULT_CHUNK_ITEMS = 10_000
# An Indexed Job allows at most 100,000 completions: more shards make bigger shards instead.
MAX_SHARDS = 100_000


@dataclass(frozen=True)
class ShardPlan:
    """How a run's `total_items` are cut into `shards` contiguous ranges."""

    total_items: int
    shards: int
    chunk_items: int = DEFAULT_CHUNK_ITEMS
    # Each shard's first position when shards follow group boundaries; None: even cuts.
    starts: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.total_items < 0 or self.shards < 1 or self.chunk_items < 1:
            raise ValueError(f"impossible shard plan: {self}")
        if self.starts is not None and (
            len(self.starts) != self.shards
            or self.starts[0] != 0
            or any(b <= a for a, b in zip(self.starts, self.starts[1:], strict=False))
            or self.starts[-1] >= max(self.total_items, 1)
        ):
            raise ValueError(f"impossible shard starts: {self}")

    def shard_range(self, shard: int) -> range:
        """Item positions of `shard` (empty only when the dataset is empty)."""
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} is outside the plan's {self.shards} shards")
        if self.starts is not None:
            last = shard + 1 == self.shards
            return range(self.starts[shard], self.total_items if last else self.starts[shard + 1])
        start = shard * self.total_items // self.shards
        stop = (shard + 1) * self.total_items // self.shards
        return range(start, stop)

    def shard_of(self, position: int) -> int:
        """The shard holding item `position` (inverse of `shard_range`)."""
        if not 0 <= position < self.total_items:
            raise ValueError(f"item position {position} is outside 0..{self.total_items - 1}")
        if self.starts is not None:
            return bisect.bisect_right(self.starts, position) - 1
        shard = (position * self.shards) // self.total_items
        # Integer rounding can put the guess one shard too low.
        while position >= self.shard_range(shard).stop:
            shard += 1
        return shard

    def to_wire(self) -> dict[str, int]:
        return {"total": self.total_items, "shards": self.shards, "chunkItems": self.chunk_items}

    def starts_wire(self) -> dict[str, list[int]]:
        """For plan.json only (too long for a termination message): the shards' starts."""
        return {} if self.starts is None else {"shardStarts": list(self.starts)}

    @classmethod
    def from_wire(cls, data: dict[str, object]) -> ShardPlan:
        starts = data.get("shardStarts")
        return cls(
            total_items=int(str(data["total"])),
            shards=int(str(data["shards"])),
            chunk_items=int(str(data.get("chunkItems", DEFAULT_CHUNK_ITEMS))),
            starts=tuple(int(s) for s in starts) if isinstance(starts, list) else None,
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
