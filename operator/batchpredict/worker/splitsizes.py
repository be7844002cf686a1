"""How many items each byte range of a byte-range plan holds (see planning.py).

A shard counts its own range when it first starts (from line ends, not parsed) and records
the count under `splits/`; later rounds, a restarted pod and the finalize step read it back,
and whoever finds no record (a shard that never started) counts the range itself. The count
is a function of the file's bytes, so two counts of one range agree and rewriting a record
is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from batchpredict.io.layout import OutputLayout
from batchpredict.io.readers import Dataset
from batchpredict.planning import ShardPlan


def split_size(
    layout: OutputLayout, plan: ShardPlan, shard: int, dataset: Callable[[], Dataset]
) -> int:
    """The recorded count of `shard`'s range, else its count (recorded for the others)."""
    path = layout.split_count(shard)
    if layout.exists(path):
        return int(layout.read_json(path)["items"])
    split = plan.splits[shard]
    items = dataset().count_split(split)
    layout.write_json(path, {"shard": shard, "range": split.to_wire(), "items": items})
    return items


def resolve_sizes(
    layout: OutputLayout, plan: ShardPlan, shards: Iterable[int], dataset: Callable[[], Dataset]
) -> ShardPlan:
    """`plan` knowing the item counts of `shards` (no-op for a plan by rows); the dataset is
    opened only when a range has no record."""
    if not plan.by_bytes:
        return plan
    opened: list[Dataset] = []

    def once() -> Dataset:
        if not opened:
            opened.append(dataset())
        return opened[0]

    return plan.with_sizes({s: split_size(layout, plan, s, once) for s in shards})
