"""Shard planning: the pure function the plan step and the operator share."""

from __future__ import annotations

import itertools

import pytest

from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.planning import ShardPlan, plan_shards


def spec(**extra: object) -> BatchPredictionSpec:
    return BatchPredictionSpec.model_validate(
        {
            "model": {"name": "m"},
            "triton": {"url": "triton:8001"},
            "input": {"uri": "/data", "format": "jsonl"},
            "output": {"uri": "/out"},
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("total", "extra", "shards"),
    [
        (1000, {"shards": 7}, 7),
        (1000, {"itemsPerShard": 300}, 4),
        (1000, {"itemsPerShard": 1000}, 1),
        (1000, {"parallelism": 5}, 20),
        (1000, {}, 16),  # default parallelism 4 -> 4 x 4 shards
        (3, {"shards": 10}, 3),  # never more shards than items
        (3, {"parallelism": 100}, 3),
        (0, {"shards": 5}, 1),  # an empty dataset still has one (empty) shard
    ],
)
def test_shard_count(total: int, extra: dict[str, object], shards: int) -> None:
    assert plan_shards(total, spec(**extra)).shards == shards


@pytest.mark.parametrize(("total", "shards"), [(1000, 7), (10, 10), (1, 1), (100_003, 64)])
def test_shards_are_contiguous_balanced_and_cover_every_item_once(total: int, shards: int) -> None:
    plan = ShardPlan(total, shards)
    ranges = [plan.shard_range(s) for s in range(shards)]
    assert ranges[0].start == 0
    assert ranges[-1].stop == total
    assert all(a.stop == b.start for a, b in itertools.pairwise(ranges))
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    assert all(plan.shard_of(p) == s for s, r in enumerate(ranges) for p in (r.start, r.stop - 1))


def test_items_per_shard_is_an_upper_bound() -> None:
    plan = plan_shards(1001, spec(itemsPerShard=100))
    assert plan.shards == 11
    assert max(len(plan.shard_range(s)) for s in range(plan.shards)) <= 100


def test_plan_round_trips_through_its_wire_form() -> None:
    plan = plan_shards(500, spec(shards=3), chunk_items=50)
    assert plan.to_wire() == {"total": 500, "shards": 3, "chunkItems": 50}
    assert ShardPlan.from_wire(plan.to_wire()) == plan


def test_outside_shards_and_positions_are_refused() -> None:
    plan = ShardPlan(10, 2)
    with pytest.raises(ValueError, match="shard 2 is outside"):
        plan.shard_range(2)
    with pytest.raises(ValueError, match=r"outside 0\.\.9"):
        plan.shard_of(10)
