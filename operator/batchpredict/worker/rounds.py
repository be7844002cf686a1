"""Which items a shard works on in each round, and the final outcome of every item.

Round 0 of shard i covers the plan's range. Round r+1 of shard i redoes, from round r, the
retryable failures of committed chunks and every item of chunks round r never committed. A
round with the marker of a manual retry redoes the final failures it selects instead (every one,
or those of the codes `retry --code` named): those of round r and the ones kept final by every
round before it, plus the items round r never committed (never tried, so always redone).
Everything is derived from committed files, so a restarted pod or the finalize step computes
the same lists.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class ManualRedo:
    """What a manual retry round redoes: the final failures of `codes` (None: every one)."""

    codes: frozenset[str] | None = None

    def redoes(self, code: str) -> bool:
        return self.codes is None or code in self.codes

    def marker(self) -> bytes:
        if self.codes is None:
            return b"manual retry\n"
        return json.dumps({"codes": sorted(self.codes)}).encode() + b"\n"

    @classmethod
    def from_marker(cls, data: bytes) -> ManualRedo:
        """The marker's codes; any other content (older runs) means every failure."""
        try:
            value = json.loads(data)
        except ValueError:
            return cls()
        codes = value.get("codes") if isinstance(value, dict) else None
        return cls(frozenset(codes)) if isinstance(codes, list) else cls()


Kept = list[tuple[int, str]]  # (position, code) of failures final so far


@dataclass
class RoundOutcome:
    """What one round of one shard committed."""

    work: Sequence[int]
    committed: dict[int, str]  # chunk -> predictions file
    failures: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def all_failures(self) -> Iterator[dict[str, Any]]:
        for failures in self.failures.values():
            yield from failures

    def kept_failures(self) -> Kept:
        """The non-retryable failures: final unless a manual retry redoes them."""
        return [
            (int(f["position"]), str(f["code"])) for f in self.all_failures() if not f["retryable"]
        ]

    def unfinished(self, chunk_items: int) -> list[int]:
        """Positions of the chunks this round never committed."""
        missing: list[int] = []
        for c in range(chunk_count(self.work, chunk_items)):
            if c not in self.committed:
                missing += list(self.work[c * chunk_items : (c + 1) * chunk_items])
        return missing

    def retry_work(self, chunk_items: int) -> list[int]:
        """Positions the next (automatic) round redoes, in order."""
        redo = [int(f["position"]) for f in self.all_failures() if f["retryable"]]
        return sorted(redo + self.unfinished(chunk_items))


def round_outcome(
    layout: OutputLayout, round_: int, shard: int, work: Sequence[int], chunk_items: int
) -> RoundOutcome:
    committed = layout.committed_chunks(round_, shard)
    committed = {c: p for c, p in committed.items() if c < chunk_count(work, chunk_items)}
    failures = {c: chunk_failures(layout, round_, shard, c) for c in committed}
    return RoundOutcome(work, committed, failures)


def next_work(
    outcome: RoundOutcome, kept: Kept, chunk_items: int, *, manual: ManualRedo | None
) -> tuple[list[int], Kept]:
    """(the next round's work, the final failures of the rounds so far) after `outcome`;
    `kept` are the final failures of the rounds before it."""
    if manual is None:
        return outcome.retry_work(chunk_items), kept + outcome.kept_failures()
    candidates = kept + [(int(f["position"]), str(f["code"])) for f in outcome.all_failures()]
    redo = [p for p, code in candidates if manual.redoes(code)]
    still = [(p, code) for p, code in candidates if not manual.redoes(code)]
    return sorted(redo + outcome.unfinished(chunk_items)), still


def _walk(
    layout: OutputLayout, plan: ShardPlan, shard: int, rounds: int
) -> Iterator[tuple[RoundOutcome, Sequence[int]]]:
    """(outcome, the next round's work) of rounds 0..rounds-1 of `shard`."""
    work: Sequence[int] = plan.shard_range(shard)
    kept: Kept = []
    for r in range(rounds):
        outcome = round_outcome(layout, r, shard, work, plan.chunk_items)
        manual = manual_redo(layout, r + 1)
        work, kept = next_work(outcome, kept, plan.chunk_items, manual=manual)
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


def manual_redo(layout: OutputLayout, round_: int) -> ManualRedo | None:
    """What round `round_` redoes when it is a manual retry round; None for any other."""
    path = layout.redo_all_marker(round_)
    if not layout.exists(path):
        return None
    with layout.fs.open(path, "rb") as handle:
        return ManualRedo.from_marker(handle.read())


def mark_manual_redo(layout: OutputLayout, round_: int, redo: ManualRedo) -> None:
    """Record what `round_` redoes; every shard of the round writes it before it derives its
    work, so all of them (and finalize) agree (they all write the same bytes)."""
    if manual_redo(layout, round_) is None:
        layout.write_atomic(layout.redo_all_marker(round_), redo.marker())
