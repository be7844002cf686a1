"""The output reader against files laid out as the worker writes them (io/layout.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchpredict.io.layout import OutputLayout
from batchpredict.io.results import OutputsNotFoundError, RunOutputs


def _jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _failure(item: str, code: str, round_: int = 0) -> dict[str, object]:
    return {
        "id": item,
        "code": code,
        "message": "m",
        "attempts": 1,
        "retryable": False,
        "round": round_,
        "shard": 0,
        "position": 0,
    }


@pytest.fixture
def run(tmp_path: Path) -> Path:
    layout = OutputLayout(str(tmp_path))
    (tmp_path / "plan.json").write_text(json.dumps({"total": 5, "shards": 2}))
    _jsonl(Path(layout.predictions_chunk(0, 0, 0, "jsonl")), [{"id": "a"}, {"id": "b"}])
    _jsonl(Path(layout.failures_chunk(0, 0, 0)), [_failure("c", "BAD_INPUT")])
    _jsonl(Path(layout.predictions_chunk(0, 1, 0, "jsonl")), [{"id": "d"}])
    _jsonl(Path(layout.failures_chunk(0, 1, 0)), [_failure("e", "TRITON_ERROR")])
    return tmp_path


def test_a_running_run_reads_what_its_shards_committed(run: Path) -> None:
    outputs = RunOutputs(str(run))
    assert not outputs.finished()
    assert [r["id"] for r in outputs.predictions()] == ["a", "b", "d"]
    assert [r["id"] for r in outputs.failures()] == ["c", "e"]
    assert [r["id"] for r in outputs.failures(codes=["TRITON_ERROR"])] == ["e"]
    assert [r["id"] for r in outputs.predictions(limit=2)] == ["a", "b"]
    assert outputs.evaluation() is None


def test_a_finished_run_reads_the_files_its_manifest_names(run: Path) -> None:
    layout = OutputLayout(str(run))
    # Only the first shard's file is named: the manifest decides, not a listing.
    first = layout.url(layout.predictions_chunk(0, 0, 0, "jsonl"))
    manifest = {"predictionFiles": [first], "total": 5}
    (run / "manifest.json").write_text(json.dumps(manifest))
    _jsonl(run / "failures.jsonl", [_failure("e", "TRITON_ERROR", 1)])
    outputs = RunOutputs(str(run))
    assert outputs.finished()
    assert [r["id"] for r in outputs.predictions()] == ["a", "b"]
    assert [r["id"] for r in outputs.failures()] == ["e"]
    assert list(outputs.failures(codes=["BAD_INPUT"])) == []


def test_parquet_predictions_stream_as_rows(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path))
    (tmp_path / "plan.json").write_text("{}")
    path = Path(layout.predictions_chunk(0, 0, 0, "parquet"))
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["x", "y"], "score": [0.5, 0.25]}), path)
    rows = list(RunOutputs(str(tmp_path)).predictions())
    assert rows == [{"id": "x", "score": 0.5}, {"id": "y", "score": 0.25}]


def test_a_place_without_a_run_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(OutputsNotFoundError, match=r"no plan\.json"):
        RunOutputs(str(tmp_path / "nothing")).plan()
