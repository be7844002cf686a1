"""A run planned by byte ranges: its total is unknown until every shard has counted its range,
and status says so instead of guessing (printer column, message, pending, ETA)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from batchpredict.api.v1alpha1.report import BatchPredictionShard
from batchpredict.api.v1alpha1.status import Phase
from batchpredict.planning import ShardPlan
from batchpredict.reconcile.naming import Role
from batchpredict.reconcile.observed import StepOutcome
from batchpredict.reconcile.progress import RoundView, ShardOutcome, aggregate_progress
from tests.unit.test_run import finalized, job, name, step

PLANNED = StepOutcome(succeeded=True, data={"total": None, "shards": 2, "byteRanges": True})
PLAN_DONE = job(Role.PLAN, complete=True)


def counted(shard: int, items: int, ok: int, *, done: bool = False) -> BatchPredictionShard:
    """Shard `shard` counted `items` in its range and finished `ok` of them."""
    progress: dict[str, Any] = {
        "itemsTotal": items,
        "succeeded": ok,
        "itemsPerSecond": 0 if done else 10.0,
        "finished": done,
    }
    return BatchPredictionShard.model_validate(
        {
            "spec": {"batchPrediction": "run", "runUid": "u-1", "round": 0, "shard": shard},
            "progress": progress,
        }
    )


def test_the_total_is_unknown_until_every_shard_counted_then_learned() -> None:
    planned = step(step(None), PLAN_DONE, PLANNED)
    assert [j["metadata"]["name"] for j in planned.create] == [name("r0")]
    assert planned.status.items is not None and planned.status.items.total is None
    assert planned.status.progress == "0 done, total unknown"
    one = step(
        planned, PLAN_DONE, PLANNED, job(Role.SHARDS, active=2), counted(0, 70, 30),
        at=timedelta(seconds=2),
    )  # fmt: skip
    items = one.status.items
    assert items is not None and (items.total, items.pending, items.succeeded) == (None, None, 30)
    assert one.status.progress == "30 done, total unknown"
    assert one.status.eta is None, "no ETA without a total"
    assert "30 items so far, total unknown" in (one.status.message or "")
    assert one.status.shards is not None and one.status.shards.byte_ranges is True
    both = step(
        one, PLAN_DONE, PLANNED, job(Role.SHARDS, active=2), counted(0, 70, 30),
        counted(1, 50, 20), at=timedelta(seconds=4),
    )  # fmt: skip
    items = both.status.items
    assert items is not None and (items.total, items.pending) == (120, 70)
    assert both.status.progress == "41%"
    assert "total unknown" not in (both.status.message or "")
    # The plan pod's result gone (an operator restart after its pod was removed): status
    # keeps the learned total and the byte-range plan.
    later = step(
        both, PLAN_DONE, job(Role.SHARDS, active=2), counted(0, 70, 40), counted(1, 50, 20),
        at=timedelta(seconds=6),
    )  # fmt: skip
    assert later.status.items is not None and later.status.items.total == 120
    assert later.status.progress == "50%"
    finished = job(Role.SHARDS, complete=True, completed=frozenset({0, 1}))
    ends = (PLAN_DONE, finished, counted(0, 70, 70, done=True), counted(1, 50, 50, done=True))
    final = step(later, *ends, job(Role.FINALIZE, complete=True), finalized(120))
    assert final.status.phase is Phase.SUCCEEDED
    assert final.status.progress == "100%"


def test_a_shard_that_never_counted_makes_the_round_uncertain() -> None:
    plan = ShardPlan(None, 3, by_bytes=True)
    ok = ShardOutcome(items_total=40, succeeded=40, finished=True)
    running = aggregate_progress(plan, [RoundView(0, {0: ok})])
    assert (running.items.total, running.items.pending, running.items.succeeded) == (None, None, 40)
    ended = aggregate_progress(plan, [RoundView(0, {0: ok, 1: ok}, finished=True)])
    assert ended.uncertain, "shard 2's items are not known: a further round must look"
    assert ended.items.total is None
    # Round 1 redoes shard 2 whole: its report tells what it held.
    redo = ShardOutcome(items_total=15, succeeded=15, finished=True)
    rounds = [RoundView(0, {0: ok, 1: ok}, finished=True), RoundView(1, {2: redo}, finished=True)]
    after = aggregate_progress(plan, rounds)
    assert (after.items.succeeded, after.items.failed, after.uncertain) == (95, 0, False)
