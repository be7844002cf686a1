"""Shard planning: a pure function the plan step and the operator share.

A run's items are numbered 0..total-1 in dataset order (after `select`). A shard is a
contiguous range of those positions; shard sizes differ by at most one item.
"""

from __future__ import annotations

import math
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

    def __post_init__(self) -> None:
        if self.total_items < 0 or self.shards < 1 or self.chunk_items < 1:
            raise ValueError(f"impossible shard plan: {self}")

    def shard_range(self, shard: int) -> range:
        """Item positions of `shard` (empty only when the dataset is empty)."""
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} is outside the plan's {self.shards} shards")
        start = shard * self.total_items // self.shards
        stop = (shard + 1) * self.total_items // self.shards
        return range(start, stop)

    def shard_of(self, position: int) -> int:
        """The shard holding item `position` (inverse of `shard_range`)."""
        if not 0 <= position < self.total_items:
            raise ValueError(f"item position {position} is outside 0..{self.total_items - 1}")
        shard = (position * self.shards) // self.total_items
        # Integer rounding can put the guess one shard too low.
        while position >= self.shard_range(shard).stop:
            shard += 1
        return shard

    def to_wire(self) -> dict[str, int]:
        return {"total": self.total_items, "shards": self.shards, "chunkItems": self.chunk_items}

    @classmethod
    def from_wire(cls, data: dict[str, object]) -> ShardPlan:
        return cls(
            total_items=int(str(data["total"])),
            shards=int(str(data["shards"])),
            chunk_items=int(str(data.get("chunkItems", DEFAULT_CHUNK_ITEMS))),
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
