"""Which items a shard works on in each round, and the final outcome of every item.

Round 0 of shard i covers the plan's range. Round r+1 of shard i redoes, from round r, the
retryable failures of committed chunks and every item of chunks round r never committed. A
round with the redo-all marker of a manual retry redoes every final failure instead: those of
round r and the non-retryable ones of every round before it.
Everything is derived from committed files, so a restarted pod or the finalize step computes
the same lists.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchpredict.io.layout import OutputLayout
from batchpredict.planning import ShardPlan


def chunk_count(work: Sequence[int], chunk_items: int) -> int:
    return -(-len(work) // chunk_items)


def chunk_failures(
    layout: OutputLayout, round_: int, shard: int, chunk: int
) -> list[dict[str, Any]]:
    path = layout.failures_chunk(round_, shard, chunk)
    return layout.read_jsonl(path) if layout.exists(path) else []


@dataclass
class RoundOutcome:
    """What one round of one shard committed."""

    work: Sequence[int]
    committed: dict[int, str]  # chunk -> predictions file
    failures: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def kept_failures(self) -> list[int]:
        """Positions of the non-retryable failures: final unless a manual retry redoes them."""
        return [
            int(f["position"])
            for failures in self.failures.values()
            for f in failures
            if not f["retryable"]
        ]

    def retry_work(self, chunk_items: int, *, every_failure: bool = False) -> list[int]:
        """Positions the next round redoes, in order."""
        redo: list[int] = []
        for c in range(chunk_count(self.work, chunk_items)):
            if c in self.committed:
                failures = self.failures.get(c, [])
                redo += [int(f["position"]) for f in failures if every_failure or f["retryable"]]
            else:
                redo += list(self.work[c * chunk_items : (c + 1) * chunk_items])
        return sorted(redo)


def round_outcome(
    layout: OutputLayout, round_: int, shard: int, work: Sequence[int], chunk_items: int
) -> RoundOutcome:
    committed = layout.committed_chunks(round_, shard)
    committed = {c: p for c, p in committed.items() if c < chunk_count(work, chunk_items)}
    failures = {c: chunk_failures(layout, round_, shard, c) for c in committed}
    return RoundOutcome(work, committed, failures)


def next_work(
    outcome: RoundOutcome, kept: list[int], chunk_items: int, *, redo_all: bool
) -> tuple[list[int], list[int]]:
    """(the next round's work, the final failures of the rounds so far) after `outcome`;
    `kept` are the final failures of the rounds before it."""
    redo = outcome.retry_work(chunk_items, every_failure=redo_all)
    if redo_all:
        return sorted(kept + redo), []
    return redo, kept + outcome.kept_failures()


def _walk(
    layout: OutputLayout, plan: ShardPlan, shard: int, rounds: int
) -> Iterator[tuple[RoundOutcome, Sequence[int]]]:
    """(outcome, the next round's work) of rounds 0..rounds-1 of `shard`."""
    work: Sequence[int] = plan.shard_range(shard)
    kept: list[int] = []
    for r in range(rounds):
        outcome = round_outcome(layout, r, shard, work, plan.chunk_items)
        redo_all = redoes_all(layout, r + 1)
        work, kept = next_work(outcome, kept, plan.chunk_items, redo_all=redo_all)
        yield outcome, work


def walk_rounds(
    layout: OutputLayout, plan: ShardPlan, shard: int, last_round: int
) -> Iterator[RoundOutcome]:
    """The outcome of rounds 0..last_round of `shard` (the last one may be unfinished)."""
    for outcome, _ in _walk(layout, plan, shard, last_round + 1):
        yield outcome


def shard_work(layout: OutputLayout, plan: ShardPlan, shard: int, round_: int) -> Sequence[int]:
    """The positions shard `shard` works on in round `round_`."""
    work: Sequence[int] = plan.shard_range(shard)
    for _, work in _walk(layout, plan, shard, round_):  # noqa: B007 (the last one is wanted)
        pass
    return work


def redoes_all(layout: OutputLayout, round_: int) -> bool:
    return layout.exists(layout.redo_all_marker(round_))


def mark_redo_all(layout: OutputLayout, round_: int) -> None:
    """Record that `round_` redoes every failure; every shard of the round writes it before
    it derives its work, so all of them (and finalize) agree."""
    if not redoes_all(layout, round_):
        layout.write_atomic(layout.redo_all_marker(round_), b"manual retry\n")
