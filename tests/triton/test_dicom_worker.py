"""The worker over DICOM instances against a real tritonserver: every instance predicted with
its value, ids SOPInstanceUIDs, and each series' instances in one shard."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from tests.dicom_files import write_ct_series
from tests.harness.triton_server import TritonHandle
from tests.triton.support import (
    assert_each_id_once,
    final_failures,
    predictions,
    run_all,
    worker_env,
)
from tests.triton.test_object_stores import (
    BUCKET,
    ObjectStore,
    run_role,
    s3_store,  # noqa: F401 (the fixture)
    store_spec,
)

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


def test_a_dicom_prefix_in_s3_is_predicted_per_series(
    triton_server: TritonHandle, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Headers and pixels read from the store by the worker processes, as in pods."""
    store: ObjectStore = request.getfixturevalue("s3_store")
    expected: dict[str, int] = {}
    for n, slices in enumerate((3, 4)):
        _, series, made = write_ct_series(tmp_path / "local" / f"s{n}", slices=slices)
        expected[series] = slices
        for s in made:
            store.fs.put_file(str(s.path), f"{BUCKET}/ct/{n}/{s.path.name}")
    spec = store_spec(
        triton_server,
        "volume_stats",
        {"uri": store.uri(f"{BUCKET}/ct/"), "format": "dicom"},
        store.uri(f"{BUCKET}/ct-out"),
        shards=1,
    )
    spec["model"]["inputs"] = [{"name": "volume", "field": "$item"}]
    env = {**worker_env(spec, tmp_path), **store.pod_env}

    plan = run_role("plan", env, tmp_path)
    assert (plan["total"], plan["shards"]) == (2, 1)
    run_role("shard", env, tmp_path, JOB_COMPLETION_INDEX="0")
    result = run_role("finalize", env, tmp_path)

    assert (result["total"], result["succeeded"], result["failed"]) == (2, 2, 0)
    rows = [
        row
        for key in store.keys("ct-out/rounds")
        if "predictions-" in key
        for row in store.read_rows(key)
    ]
    assert {r["id"]: r["slices"] for r in rows} == expected
