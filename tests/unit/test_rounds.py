"""Which items each round redoes, from committed files only: a manual round redoes the final
failures of every earlier round (all of them, or those of the codes it names), not only those
of the round before it."""

from __future__ import annotations

import json
from pathlib import Path

from batchpredict.io.layout import OutputLayout
from batchpredict.planning import ShardPlan
from batchpredict.worker.finalize import redone_later
from batchpredict.worker.rounds import ManualRedo, mark_manual_redo, shard_work, walk_rounds

PLAN = ShardPlan(total_items=10, shards=1, chunk_items=10)


def commit(
    layout: OutputLayout,
    round_: int,
    failures: dict[int, bool],
    codes: dict[int, str] | None = None,
) -> None:
    """Commit chunk 0 of shard 0 in `round_` with failures {position: retryable}."""
    records = [
        {
            "id": f"item-{p}",
            "position": p,
            "round": round_,
            "code": (codes or {}).get(p, "X"),
            "retryable": r,
        }
        for p, r in failures.items()
    ]
    if records:
        text = "".join(json.dumps(r) + "\n" for r in records).encode()
        layout.write_atomic(layout.failures_chunk(round_, 0, 0), text)
    layout.write_atomic(layout.predictions_chunk(round_, 0, 0, "jsonl"), b"")


def test_a_manual_retry_redoes_final_failures_of_every_earlier_round(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path))
    commit(layout, 0, {3: False, 5: True})  # 3 failed for good, 5 is retried in round 1
    assert list(shard_work(layout, PLAN, 0, 1)) == [5]
    commit(layout, 1, {5: False})  # ...and failed for good there
    mark_manual_redo(layout, 2, ManualRedo())
    assert list(shard_work(layout, PLAN, 0, 2)) == [3, 5], "both final failures are redone"
    commit(layout, 2, {})
    outcomes = list(walk_rounds(layout, PLAN, 0, 2))
    assert [list(o.work) for o in outcomes] == [list(range(10)), [5], [3, 5]]


def test_an_automatic_round_redoes_only_retryable_failures_and_lost_chunks(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path))
    commit(layout, 0, {3: False, 5: True})
    commit(layout, 1, {5: True})
    assert list(shard_work(layout, PLAN, 0, 2)) == [5]
    assert list(shard_work(layout, PLAN, 0, 3)) == [5], "a chunk round 2 never committed is redone"


def test_a_retry_of_some_codes_redoes_only_those_and_keeps_the_others(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path))
    commit(layout, 0, {2: False, 3: False, 5: True}, {2: "BAD", 3: "UGLY", 5: "UNAVAILABLE"})
    mark_manual_redo(layout, 1, ManualRedo(frozenset({"BAD"})))
    assert list(shard_work(layout, PLAN, 0, 1)) == [2], "UGLY and UNAVAILABLE stay final"
    commit(layout, 1, {2: False}, {2: "BAD"})
    mark_manual_redo(layout, 2, ManualRedo(frozenset({"UNAVAILABLE", "UGLY"})))
    assert list(shard_work(layout, PLAN, 0, 2)) == [3, 5], "kept ones are redone by a later retry"
    assert ManualRedo.from_marker(b"manual retry\n") == ManualRedo(), "older markers: every code"


def test_finalize_keeps_as_final_the_failures_no_later_round_redid() -> None:
    """A failure of round r is final unless round r+1 (automatic) redid it as retryable, or a
    later manual round selected its code."""
    manual = {1: ManualRedo(frozenset({"BAD"})), 2: None}
    bad = {"round": 0, "code": "BAD", "retryable": False}
    slow = {"round": 0, "code": "UNAVAILABLE", "retryable": True}
    again = {"round": 1, "code": "UNAVAILABLE", "retryable": True}
    assert redone_later(bad, 2, manual), "round 1 selected BAD"
    assert not redone_later(slow, 2, manual), "round 1 was manual and left UNAVAILABLE"
    assert redone_later(again, 2, manual), "round 2 (automatic) redid round 1's retryable"
    assert not redone_later({**again, "round": 2}, 2, manual), "the last round's are final"
