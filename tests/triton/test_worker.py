"""The worker end to end against a real tritonserver: outputs, failures, restarts, rounds."""

from __future__ import annotations

import functools
import gzip
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from batchpredict.worker import exit_codes
from batchpredict.worker.main import run
from tests.harness.triton_server import TritonHandle
from tests.triton.support import (
    WORKER,
    assert_each_id_once,
    final_failures,
    predictions,
    run_all,
    run_cli,
    termination,
    worker_env,
)

pytestmark = pytest.mark.triton


def spec_for(
    triton: TritonHandle, model: str, input_: dict[str, Any], out: Path, **extra: Any
) -> dict[str, Any]:
    output = {"uri": str(out), **extra.pop("output", {})}
    return {
        "model": {"name": model},
        "triton": {"url": triton.grpc_url},
        "input": input_,
        "output": output,
        **extra,
    }


def write_jsonl(path: Path, rows: list[dict[str, Any] | str]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("fmt", "protocol"), [("parquet", "grpc"), ("jsonl", "http")])
def test_every_item_predicted_with_the_right_value(
    triton_server: TritonHandle, tmp_path: Path, fmt: str, protocol: str
) -> None:
    n = 3000
    data = pa.table({"key": [f"item-{i}" for i in range(n)], "x": [float(i) for i in range(n)]})
    pq.write_table(data, tmp_path / "in.parquet", row_group_size=700)
    out = tmp_path / "out"
    spec = spec_for(
        triton_server,
        "double",
        {"uri": str(tmp_path / "in.parquet"), "format": "parquet", "idField": "key"},
        out,
        output={"format": fmt, "includeFields": ["x"], "combine": True},
        shards=3,
    )
    if protocol == "http":
        spec["triton"]["url"] = triton_server.http_url
    summary = run_all(spec, tmp_path, BATCHPREDICT_CHUNK_ITEMS="400")

    assert (summary["total"], summary["succeeded"], summary["failed"]) == (n, n, 0)
    rows = predictions(out)
    assert {r["id"]: r["y"] for r in rows} == {f"item-{i}": 2.0 * i for i in range(n)}
    # Each shard says what it cost: CPU (the event loop's, reading and writing shares of it)
    # and peak memory.
    shard = json.loads((out / "rounds/000/shard-00000/manifest.json").read_text())
    cpu = shard["cpuSeconds"]
    assert all(cpu[stage] > 0 for stage in ("eventLoop", "reading", "writing"))
    assert cpu["eventLoop"] + cpu["reading"] + cpu["writing"] <= cpu["process"]
    assert 20 < shard["peakMemoryMiB"] < 4096
    assert all(r["x"] * 2 == r["y"] for r in rows)
    combined = out / f"predictions.{fmt}"
    combined_rows = (
        pq.read_table(combined).to_pylist()
        if fmt == "parquet"
        else [json.loads(line) for line in combined.read_text().splitlines()]
    )
    assert sorted(r["id"] for r in combined_rows) == sorted(f"item-{i}" for i in range(n))
    assert_each_id_once(out, {f"item-{i}" for i in range(n)})
    report = json.loads((out / "rounds/000/shard-00001/report.json").read_text())
    assert report["kind"] == "BatchPredictionShard"
    assert report["metadata"]["name"] == "test-run-uid-1-r0-s1"
    assert report["progress"]["finished"] is True
    assert report["progress"]["succeeded"] == report["progress"]["itemsTotal"] == 1000


def test_rejected_items_fail_alone(triton_server: TritonHandle, tmp_path: Path) -> None:
    bad = {7, 50, 51, 199}
    rows = [{"id": f"r{i}", "x": -1.0 if i in bad else float(i)} for i in range(200)]
    out = tmp_path / "out"
    spec = spec_for(
        triton_server,
        "reject",
        {"uri": str(write_jsonl(tmp_path / "in.jsonl", rows)), "format": "jsonl", "idField": "id"},
        out,
        batching={"batchSize": 32},
        shards=2,
    )
    summary = run_all(spec, tmp_path)

    failures = final_failures(out)
    assert sorted(f["id"] for f in failures) == sorted(f"r{i}" for i in bad)
    assert {f["code"] for f in failures} == {"INVALID_ARGUMENT"}
    assert all("negative input" in f["message"] and not f["retryable"] for f in failures)
    assert (summary["succeeded"], summary["failed"]) == (196, 4)
    assert {r["id"]: r["y"] for r in predictions(out)} == {
        f"r{i}": 2.0 * i for i in range(200) if i not in bad
    }
    assert_each_id_once(out, {f"r{i}" for i in range(200)})


def test_transient_unavailable_ends_with_every_item_succeeded(
    triton_server: TritonHandle, tmp_path: Path
) -> None:
    rows = [{"x": float(i)} for i in range(300)]
    out = tmp_path / "out"
    spec = spec_for(
        triton_server,
        "flaky",
        {"uri": str(write_jsonl(tmp_path / "in.jsonl", rows)), "format": "jsonl"},
        out,
        shards=1,
        retry={"requestAttempts": 8, "requestBackoff": {"initialSeconds": 0.2, "maxSeconds": 1}},
    )
    env = worker_env(spec, tmp_path)
    assert run("plan", env) == 0
    (triton_server.model_repository / "flaky" / "unavailable_until").write_text(
        str(time.time() + 2)
    )
    started = time.monotonic()
    assert run("shard", {**env, "JOB_COMPLETION_INDEX": "0"}) == 0
    assert time.monotonic() - started > 1.5, "the model was never unavailable"
    assert run("finalize", env) == 0
    summary = json.loads((out / "manifest.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (300, 0)
    assert {r["id"]: r["y"] for r in predictions(out)} == {str(i): 2.0 * i for i in range(300)}


def test_retry_round_redoes_exactly_the_retryable_failures(
    triton_server: TritonHandle, tmp_path: Path
) -> None:
    rows = [{"x": float(i)} for i in range(100)]
    out = tmp_path / "out"
    spec = spec_for(
        triton_server,
        "flaky",
        {"uri": str(write_jsonl(tmp_path / "in.jsonl", rows)), "format": "jsonl"},
        out,
        shards=2,
        retry={"requestAttempts": 1},
    )
    env = worker_env(spec, tmp_path, BATCHPREDICT_CHUNK_ITEMS="20")
    assert run("plan", env) == 0
    flag = triton_server.model_repository / "flaky" / "unavailable_until"
    # Round 0: shard 0 meets an unavailable model, shard 1 a healthy one.
    flag.write_text(str(time.time() + 3600))
    assert run("shard", {**env, "JOB_COMPLETION_INDEX": "0"}) == 0
    flag.write_text("0")
    assert run("shard", {**env, "JOB_COMPLETION_INDEX": "1"}) == 0
    round0 = json.loads((out / "rounds/000/shard-00000/manifest.json").read_text())
    assert (round0["failed"], round0["retryableFailed"]) == (50, 50)
    shard1_files = {p: p.stat().st_mtime_ns for p in (out / "rounds/000/shard-00001").iterdir()}

    for shard in ("0", "1"):
        round1 = {**env, "JOB_COMPLETION_INDEX": shard, "BATCHPREDICT_ROUND": "1"}
        assert run("shard", round1) == 0
    redone = json.loads((out / "rounds/001/shard-00000/manifest.json").read_text())
    nothing = json.loads((out / "rounds/001/shard-00001/manifest.json").read_text())
    assert (redone["items"], redone["succeeded"]) == (50, 50)
    assert nothing["items"] == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "rounds/000/shard-00001").iterdir()} == (
        shard1_files
    )
    assert run("finalize", {**env, "BATCHPREDICT_ROUND": "1"}) == 0
    summary = json.loads((out / "manifest.json").read_text())
    assert (summary["succeeded"], summary["failed"], summary["rounds"]) == (100, 0, 2)
    assert final_failures(out) == []
    assert_each_id_once(out, {str(i) for i in range(100)})


def test_worker_killed_mid_shard_resumes_without_duplicates(
    triton_server: TritonHandle, tmp_path: Path
) -> None:
    n = 480
    rows = [{"x": float(i)} for i in range(n)]
    out = tmp_path / "out"
    spec = spec_for(
        triton_server,
        "slow",
        {"uri": str(write_jsonl(tmp_path / "in.jsonl", rows)), "format": "jsonl"},
        out,
        shards=1,
        batching={"concurrency": 1},
    )
    env = worker_env(spec, tmp_path, BATCHPREDICT_CHUNK_ITEMS="40")
    assert run("plan", env) == 0
    shard_env = {**env, "JOB_COMPLETION_INDEX": "0"}
    process = subprocess.Popen([WORKER, "shard"], env=shard_env, stderr=subprocess.DEVNULL)
    shard_dir = out / "rounds/000/shard-00000"
    deadline = time.monotonic() + 60
    while len(list(shard_dir.glob("predictions-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    committed = {p: p.stat().st_mtime_ns for p in shard_dir.glob("predictions-*")}
    assert 2 <= len(committed) < n // 40, "the worker was not killed mid-shard"
    assert not (shard_dir / "manifest.json").exists()

    assert run("shard", shard_env) == 0
    assert run("finalize", env) == 0
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in committed.items()), (
        "committed chunks were redone"
    )
    assert not list(shard_dir.glob(".*.tmp"))
    assert sorted(r["y"] for r in predictions(out)) == [2.0 * i for i in range(n)]
    assert_each_id_once(out, {str(i) for i in range(n)})


def test_malformed_rows_fail_alone_with_clear_messages(
    triton_server: TritonHandle, tmp_path: Path
) -> None:
    rows: list[dict[str, Any] | str] = [{"id": f"a{i}", "x": float(i)} for i in range(10)]
    rows[2] = '{"id": "a2", "x": 2.0'  # truncated JSON
    rows[5] = {"id": "a5", "x": "five"}
    rows[8] = {"id": "a8", "y": 1.0}
    out = tmp_path / "out"
    spec = spec_for(
        triton_server,
        "double",
        {"uri": str(write_jsonl(tmp_path / "in.jsonl", rows)), "format": "jsonl", "idField": "id"},
        out,
    )
    spec["model"] = {"name": "double", "inputs": [{"name": "x", "field": "x"}]}
    summary = run_all(spec, tmp_path)

    failures = {f["id"]: f for f in final_failures(out)}
    assert set(failures) == {"2", "a5", "a8"}  # the unreadable line keeps its row number
    assert "line 3 is not valid JSON" in failures["2"]["message"]
    assert "field 'x': cannot convert 'five' to FP32" in failures["a5"]["message"]
    assert "field 'x' is missing" in failures["a8"]["message"]
    assert {f["code"] for f in failures.values()} == {"MALFORMED_ITEM"}
    assert summary["succeeded"] == 7
    assert_each_id_once(out, {f"a{i}" for i in range(10) if i != 2} | {"2"})


TEXT_CODECS = {
    "": lambda data: data,
    ".gz": gzip.compress,
    ".zst": lambda data: pa.compress(data, "zstd", asbytes=True),
}


@pytest.mark.parametrize(
    ("fmt", "suffix"), [("jsonl", ""), ("csv", ""), ("jsonl", ".gz"), ("csv", ".zst")]
)
def test_text_formats_read_by_arrow_keep_each_id_once_with_malformed_rows(
    triton_server: TritonHandle, tmp_path: Path, fmt: str, suffix: str
) -> None:
    """Thousands of rows in Arrow blocks, a few malformed ones among them, compressed or not:
    each malformed row fails alone with its line number, every other row is predicted."""
    n = 6000
    bad = {17: "truncated", 2500: "fields", 2501: "value", 5999: "truncated"}
    lines = []
    for i in range(n):
        kind = bad.get(i)
        if fmt == "jsonl":
            row = json.dumps({"id": f"r{i}", "x": "nine" if kind == "value" else i * 0.5})
            lines.append(row[:-3] if kind in {"truncated", "fields"} else row)
        else:
            row = f"r{i},{'nine' if kind == 'value' else i * 0.5}"
            lines.append(row + ",extra" if kind in {"truncated", "fields"} else row)
    text = ("id,x\n" if fmt == "csv" else "") + "\n".join(lines) + "\n"
    path = tmp_path / f"in.{fmt}{suffix}"
    path.write_bytes(TEXT_CODECS[suffix](text.encode()))
    out = tmp_path / "out"
    spec = spec_for(
        triton_server,
        "double",
        {"uri": str(path), "format": fmt, "idField": "id"},
        out,
        output={"includeFields": ["x"]},
        shards=3,
    )
    spec["model"] = {"name": "double", "inputs": [{"name": "x", "field": "x"}]}
    summary = run_all(spec, tmp_path, BATCHPREDICT_CHUNK_ITEMS="700")

    # An unreadable row has no id field: its id is its row number (rows do not shift).
    unreadable = {str(i) for i, kind in bad.items() if kind != "value"}
    expected_ids = {f"r{i}" for i in range(n) if bad.get(i, "value") == "value"} | unreadable
    assert_each_id_once(out, expected_ids)
    failures = {f["id"]: f for f in final_failures(out)}
    assert set(failures) == unreadable | {"r2501"}
    header = 1 if fmt == "csv" else 0
    for i in unreadable:
        assert f"line {int(i) + 1 + header} " in failures[i]["message"]
    assert "field 'x': cannot convert 'nine' to FP32" in failures["r2501"]["message"]
    assert (summary["succeeded"], summary["failed"]) == (n - 4, 4)
    assert {r["id"]: r["y"] for r in predictions(out)} == {
        f"r{i}": float(i) for i in range(n) if i not in bad
    }


def test_corrupt_image_fails_alone(triton_server: TritonHandle, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for value in range(6):
        Image.new("RGB", (16, 12), (value * 40,) * 3).save(images / f"img{value}.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    out = tmp_path / "out"
    spec = spec_for(
        triton_server,
        "image_mean",
        {
            "uri": str(images),
            "format": "files",
            "select": {"glob": "*.png"},
            "preprocess": {"image": {"resize": [8, 8], "scale": 1.0}},
        },
        out,
    )
    summary = run_all(spec, tmp_path)

    assert [f["id"] for f in final_failures(out)] == ["broken.png"]
    failure = final_failures(out)[0]
    assert failure["code"] == "UNREADABLE_ITEM"
    assert "cannot decode image broken.png" in failure["message"]
    means = {r["id"]: r["mean"] for r in predictions(out)}
    assert means == {f"img{v}.png": pytest.approx(v * 40.0) for v in range(6)}
    assert (summary["succeeded"], summary["failed"]) == (6, 1)


def test_images_and_a_preprocess_function_run_across_cores_each_id_once(
    triton_server: TritonHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JPEGs decoded by a pool of threads (at reduced scale), then a user's function in a pool
    of processes: items keep their ids, the bad ones fail alone, every id once."""
    images = tmp_path / "images"
    images.mkdir()
    n = 150
    for value in range(n):
        Image.new("RGB", (96, 64), (value,) * 3).save(images / f"img{value:03d}.jpg", quality=95)
    (images / "img-broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    out = tmp_path / "out"
    spec = spec_for(
        triton_server,
        "image_mean",
        {
            "uri": str(images),
            "format": "files",
            "preprocess": {"image": {"resize": [8, 8], "scale": 1.0}, "workers": 3},
        },
        out,
        batching={"batchSize": 16},
        shards=2,
    )
    summary = run_all(spec, tmp_path)
    ids = {f"img{v:03d}.jpg" for v in range(n)} | {"img-broken.jpg"}
    assert_each_id_once(out, ids)
    assert [f["id"] for f in final_failures(out)] == ["img-broken.jpg"]
    means = {r["id"]: r["mean"] for r in predictions(out)}
    assert means == {f"img{v:03d}.jpg": pytest.approx(v, abs=1.0) for v in range(n)}
    shard = json.loads((out / "rounds/000/shard-00000/manifest.json").read_text())
    assert shard["cpuSeconds"]["preprocessing"] > 0  # the pool's threads did the decoding

    (tmp_path / "rowprep.py").write_text(
        "def features(item):\n"
        "    if item['v'] == 7:\n"
        "        raise ValueError('seven is not allowed')\n"
        "    return {'x': [item['v'] / 2]}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = [{"id": f"r{i}", "v": i} for i in range(300)]
    out = tmp_path / "out-function"
    spec = spec_for(
        triton_server,
        "double",
        {
            "uri": str(write_jsonl(tmp_path / "in.jsonl", rows)),
            "format": "jsonl",
            "idField": "id",
            "preprocess": {"function": "rowprep:features", "workers": 2},
        },
        out,
        shards=2,
    )
    spec["model"] = {"name": "double", "inputs": [{"name": "x", "field": "x"}]}
    summary = run_all(spec, tmp_path)
    assert_each_id_once(out, {f"r{i}" for i in range(300)})
    (failure,) = final_failures(out)
    assert (failure["id"], failure["code"]) == ("r7", "PREPROCESS_FAILED")
    assert {r["id"]: r["y"] for r in predictions(out)} == {
        f"r{i}": float(i) for i in range(300) if i != 7
    }
    assert (summary["succeeded"], summary["failed"]) == (299, 1)


def test_argmax_and_topk_postprocessing(triton_server: TritonHandle, tmp_path: Path) -> None:
    rows = [{"x": float(i)} for i in range(10)]
    out = tmp_path / "out"
    spec = spec_for(
        triton_server,
        "classify",
        {"uri": str(write_jsonl(tmp_path / "in.jsonl", rows)), "format": "jsonl"},
        out,
    )
    spec["model"]["outputs"] = [
        {"name": "scores", "field": "label", "postprocess": "argmax"},
        {"name": "scores", "field": "top", "postprocess": "topk", "k": 2},
    ]
    run_all(spec, tmp_path)
    by_id = {r["id"]: r for r in predictions(out)}
    assert [by_id[str(i)]["label"] for i in range(10)] == [i % 4 for i in range(10)]
    assert by_id["1"]["top"] == [1, 3]
    assert by_id["1"]["top_scores"] == pytest.approx([1.0, 0.3])


def test_missing_model_exits_cannot_start_naming_model_and_server(
    triton_server: TritonHandle, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", [{"x": 1.0}])
    spec = spec_for(
        triton_server,
        "no-such-model",
        {"uri": str(tmp_path / "in.jsonl"), "format": "jsonl"},
        tmp_path / "out",
    )
    result = run_cli("plan", worker_env(spec, tmp_path))
    assert result.returncode == exit_codes.CANNOT_START, result.stderr
    message = termination(tmp_path)
    assert message["reason"] == "ModelNotFound"
    assert "'no-such-model'" in message["message"]
    assert triton_server.grpc_url in message["message"]
    assert "double" in message["message"]  # the models that are there


def test_missing_dataset_exits_cannot_start(triton_server: TritonHandle, tmp_path: Path) -> None:
    spec = spec_for(
        triton_server,
        "double",
        {"uri": str(tmp_path / "nowhere.parquet"), "format": "parquet"},
        tmp_path / "out",
    )
    env = worker_env(spec, tmp_path)
    assert run("plan", env) == exit_codes.CANNOT_START
    message = termination(tmp_path)
    assert message["reason"] == "DatasetNotFound"
    assert "nowhere.parquet does not exist" in message["message"]
    assert run("shard", {**env, "JOB_COMPLETION_INDEX": "0"}) == exit_codes.CANNOT_START
    assert termination(tmp_path)["reason"] == "PlanNotFound"


def test_an_output_location_that_cannot_be_written_exits_cannot_start(
    triton_server: TritonHandle, tmp_path: Path
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"x": 1.0}\n')
    (tmp_path / "taken").write_text("a file where the outputs' directory would go")
    spec = spec_for(
        triton_server, "double", {"uri": str(data), "format": "jsonl"}, tmp_path / "taken" / "out"
    )
    assert run("plan", worker_env(spec, tmp_path)) == exit_codes.CANNOT_START
    message = termination(tmp_path)
    assert message["reason"] == "OutputNotWritable"
    assert f"spec.output.uri: cannot write {tmp_path}/taken/out/plan.json" in message["message"]


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over plain HTTP, and its base URL."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=served))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_a_dataset_over_http_is_predicted_and_a_missing_one_named(
    triton_server: TritonHandle, tmp_path: Path, http_dir: tuple[Path, str]
) -> None:
    served, base = http_dir
    pq.write_table(pa.table({"x": [float(i) for i in range(300)]}), served / "in.parquet")
    spec = spec_for(
        triton_server,
        "double",
        {"uri": f"{base}/in.parquet", "format": "parquet"},
        tmp_path / "out",
    )
    summary = run_all(spec, tmp_path)

    assert (summary["succeeded"], summary["failed"]) == (300, 0)
    assert {r["id"]: r["y"] for r in predictions(tmp_path / "out")} == {
        str(i): 2.0 * i for i in range(300)
    }
    spec["input"]["uri"] = f"{base}/nowhere.parquet"
    assert run("plan", worker_env(spec, tmp_path)) == exit_codes.CANNOT_START
    message = termination(tmp_path)
    assert message["reason"] == "DatasetNotFound"
    assert f"{base}/nowhere.parquet does not exist" in message["message"]


def test_a_model_that_does_not_batch_gets_one_item_per_request(
    triton_server: TritonHandle, tmp_path: Path
) -> None:
    rows: list[dict[str, Any] | str] = [
        {"key": f"v{i}", "v": [i, i + 1, i + 2, i + 3]} for i in range(40)
    ]
    rows.insert(7, {"key": "short", "v": [1, 2, 3]})
    spec = spec_for(
        triton_server,
        "triple_unbatched",
        {"uri": str(write_jsonl(tmp_path / "in.jsonl", rows)), "format": "jsonl", "idField": "key"},
        tmp_path / "out",
    )
    summary = run_all(spec, tmp_path)

    assert (summary["succeeded"], summary["failed"]) == (40, 1)
    got = {r["id"]: r["y"] for r in predictions(tmp_path / "out")}
    assert got == {f"v{i}": [3.0 * (i + d) for d in range(4)] for i in range(40)}
    [failure] = final_failures(tmp_path / "out")
    assert failure["id"] == "short"
    assert "3 values do not fit shape [4]" in failure["message"]


def test_invalid_spec_exits_cannot_start_naming_the_field(tmp_path: Path) -> None:
    spec = {
        "model": {"name": "double"},
        "input": {"uri": "x", "format": "xml"},
        "output": {"uri": str(tmp_path)},
    }
    assert run("plan", worker_env(spec, tmp_path)) == exit_codes.CANNOT_START
    message = termination(tmp_path)
    assert message["reason"] == "InvalidSpec"
    assert "spec.input.format" in message["message"]


def test_finalize_records_items_of_a_shard_that_never_finished(
    triton_server: TritonHandle, tmp_path: Path
) -> None:
    rows = [{"x": float(i)} for i in range(60)]
    out = tmp_path / "out"
    spec = spec_for(
        triton_server,
        "double",
        {"uri": str(write_jsonl(tmp_path / "in.jsonl", rows)), "format": "jsonl"},
        out,
        shards=2,
    )
    env = worker_env(spec, tmp_path, BATCHPREDICT_CHUNK_ITEMS="20")
    assert run("plan", env) == 0
    assert run("shard", {**env, "JOB_COMPLETION_INDEX": "0"}) == 0  # shard 1's pod gave up
    assert run("finalize", env) == 0

    summary = json.loads((out / "manifest.json").read_text())
    assert (summary["succeeded"], summary["failed"], summary["notProcessed"]) == (30, 30, 30)
    assert summary["incompleteShards"] == [{"shard": 1, "round": 0, "items": 30}]
    failures = final_failures(out)
    assert [f["id"] for f in failures] == [str(i) for i in range(30, 60)]
    assert all(f["code"] == "NOT_PROCESSED" and f["retryable"] for f in failures)
    assert "shard 1 did not finish in round 0" in failures[0]["message"]
    assert_each_id_once(out, {str(i) for i in range(60)})
