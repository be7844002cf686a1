"""The worker over DICOM instances against a real tritonserver: every instance predicted with
its value, ids SOPInstanceUIDs, and each series' instances in one shard."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from tests.dicom_files import write_ct_series
from tests.harness.triton_server import TritonHandle
from tests.triton.support import assert_each_id_once, final_failures, predictions, run_all

pytestmark = pytest.mark.triton


def test_instances_of_a_series_stay_in_one_shard(
    triton_server: TritonHandle, tmp_path: Path
) -> None:
    data = tmp_path / "dicom"
    hu: dict[str, float] = {}
    series_of: dict[str, str] = {}
    for n, slices in enumerate((5, 2, 6, 3)):
        _, series, made = write_ct_series(data / f"s{n}", slices=slices)
        for s in made:
            hu[s.sop] = float(s.hu.mean())
            series_of[s.sop] = series
    (data / "notes.txt").write_text("not dicom\n")
    out = tmp_path / "out"
    spec = {
        "model": {"name": "volume_stats", "inputs": [{"name": "volume", "field": "$item"}]},
        "triton": {"url": triton_server.grpc_url},
        "input": {
            "uri": str(data),
            "format": "dicom",
            "dicom": {"granularity": "instance", "pixels": {"channels": True}},
        },
        "output": {"uri": str(out), "includeFields": ["SeriesInstanceUID", "sliceIndex"]},
        "shards": 3,
    }
    summary = run_all(spec, tmp_path, BATCHPREDICT_CHUNK_ITEMS="2")

    assert (summary["total"], summary["succeeded"], summary["failed"]) == (17, 16, 1)
    assert_each_id_once(out, {*hu, "notes.txt"})
    assert [(f["id"], f["code"]) for f in final_failures(out)] == [("notes.txt", "UNREADABLE_ITEM")]
    shards_of: dict[str, set[str]] = defaultdict(set)
    for path in out.glob("rounds/000/shard-*/predictions-*.jsonl"):
        for row in map(json.loads, path.read_text().splitlines()):
            assert row["mean"] == pytest.approx(hu[row["id"]])  # HU: rescaled, no window
            assert row["SeriesInstanceUID"] == series_of[row["id"]]
            shards_of[row["SeriesInstanceUID"]].add(path.parent.name)
    assert len(shards_of) == 4
    assert all(len(shards) == 1 for shards in shards_of.values()), shards_of
    plan = json.loads((out / "plan.json").read_text())
    assert plan["shards"] == 3 and len(plan["shardStarts"]) == 3
    assert len({s for shards in shards_of.values() for s in shards}) == 3
    assert len(predictions(out)) == 16
