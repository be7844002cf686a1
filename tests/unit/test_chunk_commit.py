"""Committing a chunk: the failures file is there exactly when items of the chunk failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from batchpredict.io.layout import OutputLayout
from batchpredict.io.readers import ItemBatch
from batchpredict.triton.tensors import OutputBinding
from batchpredict.worker.chunks import Chunk, Piece, write_chunk
from batchpredict.worker.preprocess import Prepared
from batchpredict.worker.rounds import round_outcome

BINDINGS = [OutputBinding("y", "y")]


def answered_chunk(ids: list[str], failed: list[int]) -> Chunk:
    """Chunk 0 of items `ids`, `failed` of them recorded as failures, the rest answered."""
    batch = ItemBatch(np.arange(len(ids), dtype=np.int64), pa.array(ids))
    prepared = Prepared(batch, order=np.arange(len(ids), dtype=np.int64))
    chunk = Chunk(0, len(ids))
    ok = np.array([i for i in range(len(ids)) if i not in failed], dtype=np.intp)
    outputs = {"y": np.arange(len(ok), dtype=np.float32).reshape(-1, 1)}
    chunk.pieces.append(Piece(prepared, ok, outputs))
    chunk.failures += [
        {"id": ids[i], "position": i, "code": "INVALID_ARGUMENT", "retryable": False}
        for i in failed
    ]
    return chunk


def commit(layout: OutputLayout, chunk: Chunk) -> int:
    return write_chunk(layout, chunk, BINDINGS, ["y"], round_=0, shard=0, output_format="jsonl")


def test_a_chunk_without_failures_removes_what_a_broken_attempt_recorded(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path))
    # A first attempt recorded a failure, then broke before its commit point.
    assert commit(layout, answered_chunk(["a", "b", "c"], failed=[1])) == 2
    Path(layout.predictions_chunk(0, 0, 0, "jsonl")).unlink()
    assert Path(layout.failures_chunk(0, 0, 0)).exists()

    assert commit(layout, answered_chunk(["a", "b", "c"], failed=[])) == 3
    assert not Path(layout.failures_chunk(0, 0, 0)).exists()
    outcome = round_outcome(layout, 0, 0, range(3), chunk_items=3)
    assert list(outcome.committed) == [0]
    assert outcome.failures == {0: []}  # every item exactly once: all in predictions


def test_a_chunk_with_failures_records_each_item_once(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path))
    assert commit(layout, answered_chunk(["a", "b", "c"], failed=[0, 2])) == 1
    outcome = round_outcome(layout, 0, 0, range(3), chunk_items=3)
    assert [f["id"] for f in outcome.failures[0]] == ["a", "c"]
    assert layout.read_jsonl(layout.predictions_chunk(0, 0, 0, "jsonl")) == [{"id": "b", "y": 0.0}]
