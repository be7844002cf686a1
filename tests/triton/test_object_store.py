"""The worker on an S3-compatible object store: moto's S3 server on loopback, reached the way a
user reaches MinIO or any other S3 endpoint, through AWS_* variables in the worker pod's env.

The roles run as `batchpredict-worker` processes, as in a pod: the store's credentials and
endpoint are in their environment only, never in this test process's.
"""

from __future__ import annotations

import gc
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from moto.server import ThreadedMotoServer

from batchpredict.io.layout import OutputLayout
from batchpredict.worker import exit_codes
from tests.harness.procs import free_port
from tests.harness.triton_server import TritonHandle
from tests.triton.support import run_cli, termination, worker_env

pytestmark = pytest.mark.triton

BUCKET = "bucket"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Store:
    """A running S3 endpoint, a client of it for the test's own reads and writes, and the pod
    environment that points the worker at it."""

    endpoint: str
    fs: s3fs.S3FileSystem

    @property
    def pod_env(self) -> dict[str, str]:
        # What a user puts in spec.worker.env (the keys from a Secret); botocore reads the
        # endpoint from AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL for every AWS service).
        return {
            "AWS_ACCESS_KEY_ID": "test-key",
            "AWS_SECRET_ACCESS_KEY": "test-secret",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }

    def keys(self, prefix: str) -> list[str]:
        return sorted(self.fs.find(f"{BUCKET}/{prefix}"))

    def read_json(self, key: str) -> Any:
        return json.loads(self.fs.cat_file(key))

    def read_rows(self, key: str) -> list[dict[str, Any]]:
        data = self.fs.cat_file(key)
        if key.endswith(".parquet"):
            return list(pq.read_table(io.BytesIO(data)).to_pylist())
        return [json.loads(line) for line in data.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Store]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        # No listings cache: the workers write the bucket behind this client's back.
        fs = s3fs.S3FileSystem(
            key="test-key",
            secret="test-secret",  # noqa: S106 (moto takes any credentials)
            endpoint_url=endpoint,
            use_listings_cache=False,
            skip_instance_cache=True,
        )
        fs.mkdir(BUCKET)
        yield S3Store(endpoint, fs)
    finally:
        server.stop()


def s3_spec(
    triton: TritonHandle, model: str, input_: dict[str, Any], out: str, **extra: Any
) -> dict[str, Any]:
    return {
        "model": {"name": model},
        "triton": {"url": triton.grpc_url},
        "input": input_,
        "output": {"uri": out, **extra.pop("output", {})},
        **extra,
    }


def run_role(role: str, env: dict[str, str], tmp: Path, **extra: str) -> dict[str, Any]:
    """Run one role as a pod would; returns its termination message."""
    result = run_cli(role, {**env, **extra})
    assert result.returncode == exit_codes.OK, f"{role}: {termination(tmp)}\n{result.stderr}"
    return termination(tmp)


def assert_no_temporary_objects(s3: S3Store, prefix: str) -> None:
    leftovers = [key for key in s3.keys(prefix) if key.endswith(".tmp")]
    assert not leftovers, f"temporary objects left in the bucket: {leftovers}"


def test_s3_dataset_predicted_once_each_into_s3(
    triton_server: TritonHandle, s3: S3Store, tmp_path: Path
) -> None:
    n = 300
    data = pa.table({"key": [f"item-{i}" for i in range(n)], "x": [float(i) for i in range(n)]})
    buffer = io.BytesIO()
    pq.write_table(data, buffer, row_group_size=70)
    s3.fs.pipe_file(f"{BUCKET}/in/data.parquet", buffer.getvalue())
    spec = s3_spec(
        triton_server,
        "double",
        {"uri": f"s3://{BUCKET}/in/data.parquet", "format": "parquet", "idField": "key"},
        f"s3://{BUCKET}/out",
        output={"format": "parquet", "includeFields": ["x"], "combine": True},
        shards=3,
    )
    env = {**worker_env(spec, tmp_path, BATCHPREDICT_CHUNK_ITEMS="40"), **s3.pod_env}

    plan = run_role("plan", env, tmp_path)
    assert (plan["total"], plan["shards"], plan["chunkItems"]) == (n, 3, 40)
    for shard in range(3):
        run_role("shard", env, tmp_path, JOB_COMPLETION_INDEX=str(shard))
    result = run_role("finalize", env, tmp_path)

    assert (result["total"], result["succeeded"], result["failed"]) == (n, n, 0)
    assert result["predictions"] == f"s3://{BUCKET}/out/predictions.parquet"
    summary = s3.read_json(f"{BUCKET}/out/manifest.json")
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (n, n, 0)
    # 100 items a shard in chunks of 40: 3 chunks each, every one named by its s3:// URI.
    files = summary["predictionFiles"]
    assert len(files) == 9
    assert all(f.startswith(f"s3://{BUCKET}/out/rounds/000/shard-") for f in files)
    rows = [row for f in files for row in s3.read_rows(f.removeprefix("s3://"))]
    ids = Counter(r["id"] for r in rows)
    assert set(ids) == {f"item-{i}" for i in range(n)}
    assert max(ids.values()) == 1, "an id was predicted more than once"
    assert all(r["y"] == 2 * r["x"] for r in rows)
    assert {r["id"]: r["y"] for r in rows} == {f"item-{i}": 2.0 * i for i in range(n)}
    combined = s3.read_rows(f"{BUCKET}/out/predictions.parquet")
    assert sorted(r["id"] for r in combined) == sorted(f"item-{i}" for i in range(n))
    assert s3.fs.cat_file(f"{BUCKET}/out/failures.jsonl") == b""
    assert_no_temporary_objects(s3, "out")


def test_s3_shard_redoes_only_the_chunk_it_did_not_commit(
    triton_server: TritonHandle, s3: S3Store, tmp_path: Path
) -> None:
    n, bad = 240, {5, 130, 131}  # the `reject` model fails items with a negative x alone
    lines = [json.dumps({"x": -1.0 if i in bad else float(i)}) for i in range(n)]
    s3.fs.pipe_file(f"{BUCKET}/resume/in.jsonl", "\n".join(lines).encode() + b"\n")
    out = f"{BUCKET}/resume/out"
    spec = s3_spec(
        triton_server,
        "reject",
        {"uri": f"s3://{BUCKET}/resume/in.jsonl", "format": "jsonl"},
        f"s3://{out}",
        shards=1,
        batching={"batchSize": 16},
    )
    env = {**worker_env(spec, tmp_path, BATCHPREDICT_CHUNK_ITEMS="40"), **s3.pod_env}
    run_role("plan", env, tmp_path)
    run_role("shard", env, tmp_path, JOB_COMPLETION_INDEX="0")
    shard_dir = f"{out}/rounds/000/shard-00000"
    chunks = [k for k in s3.keys("resume/out") if "/predictions-" in k]
    assert len(chunks) == 6

    # The pod died after committing chunk 3's failures but before its predictions (the commit
    # point), so it never wrote the shard's manifest either.
    lost = f"{shard_dir}/predictions-000003.jsonl"
    assert s3.fs.exists(f"{shard_dir}/failures-000003.jsonl")
    s3.fs.rm_file(lost)
    s3.fs.rm_file(f"{shard_dir}/manifest.json")
    # Chunk 1 has no bad item, but that attempt had recorded one of its items as failed (Triton
    # was away) before dying at the commit point: the rerun answers it, and the record must go.
    stale = f"{shard_dir}/failures-000001.jsonl"
    record = {"id": "45", "position": 45, "code": "UNAVAILABLE", "retryable": True}
    s3.fs.pipe_file(stale, json.dumps(record).encode() + b"\n")
    also_lost = f"{shard_dir}/predictions-000001.jsonl"
    s3.fs.rm_file(also_lost)
    kept = {k: s3.fs.info(k)["LastModified"] for k in chunks if k not in {lost, also_lost}}
    time.sleep(1.1)  # S3's LastModified counts whole seconds: a rewrite would show
    run_role("shard", env, tmp_path, JOB_COMPLETION_INDEX="0")
    result = run_role("finalize", env, tmp_path)

    assert s3.fs.exists(lost)
    assert s3.fs.exists(also_lost)
    assert not s3.fs.exists(stale), "a failure record outlived its chunk's commit"
    redone = {k: s3.fs.info(k)["LastModified"] for k in kept}
    assert redone == kept, "committed chunks were redone"
    assert (result["total"], result["succeeded"], result["failed"]) == (n, n - 3, 3)
    predicted = Counter(r["id"] for k in chunks for r in s3.read_rows(k))
    failed = Counter(f["id"] for f in s3.read_rows(f"{out}/failures.jsonl"))
    assert set(failed) == {str(i) for i in bad}
    assert predicted + failed == Counter(str(i) for i in range(n)), "an id is missing or twice"
    assert s3.read_json(f"{shard_dir}/manifest.json")["succeeded"] == n - 3
    assert_no_temporary_objects(s3, "resume")


def test_missing_s3_dataset_exits_cannot_start_naming_it(
    triton_server: TritonHandle, s3: S3Store, tmp_path: Path
) -> None:
    uri = f"s3://{BUCKET}/nothing.parquet"
    spec = s3_spec(
        triton_server,
        "double",
        {"uri": uri, "format": "parquet"},
        f"s3://{BUCKET}/missing/out",
    )
    result = run_cli("plan", {**worker_env(spec, tmp_path), **s3.pod_env})

    assert result.returncode == exit_codes.CANNOT_START, result.stderr
    message = termination(tmp_path)
    assert message["reason"] == "DatasetNotFound"
    assert f"{uri} does not exist" in message["message"]
    assert not s3.keys("missing"), "a plan that cannot start wrote outputs"


def test_an_output_bucket_that_does_not_exist_is_named_and_never_created(
    triton_server: TritonHandle, s3: S3Store, tmp_path: Path
) -> None:
    data = io.BytesIO()
    pq.write_table(pa.table({"x": [1.0, 2.0]}), data)
    s3.fs.pipe_file(f"{BUCKET}/in/two.parquet", data.getvalue())
    spec = s3_spec(
        triton_server,
        "double",
        {"uri": f"s3://{BUCKET}/in/two.parquet", "format": "parquet"},
        "s3://mistyped-bucket/out",
    )
    result = run_cli("plan", {**worker_env(spec, tmp_path), **s3.pod_env})

    assert result.returncode == exit_codes.CANNOT_START, result.stderr
    message = termination(tmp_path)
    assert message["reason"] == "OutputNotWritable"
    assert "spec.output.uri: cannot write s3://mistyped-bucket/out/plan.json" in message["message"]
    assert not s3.fs.exists("mistyped-bucket")


# One PUT at close; a multipart upload (s3fs uploads parts of 50 MiB).
@pytest.mark.parametrize("size", [1024, 51 * 1024 * 1024])
def test_a_write_that_breaks_leaves_no_object(
    s3: S3Store, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    for name, value in s3.pod_env.items():
        monkeypatch.setenv(name, value)
    layout = OutputLayout(f"s3://{BUCKET}/broken-{size}")
    path = layout.path("predictions-000000.parquet")

    def write_then_break() -> None:
        with layout.open_atomic(path) as handle:
            handle.write(b"x" * size)
            raise RuntimeError("encoder broke")

    with pytest.raises(RuntimeError, match="encoder broke"):
        write_then_break()
    gc.collect()  # a file object that is collected closes itself: it must not finish the upload
    layout.write_atomic(layout.path("whole.json"), b"{}")

    assert s3.keys(f"broken-{size}") == [f"{BUCKET}/broken-{size}/whole.json"]
    assert not s3.fs.list_multipart_uploads(BUCKET), "an abandoned upload was left open"
    s3fs.S3FileSystem.clear_instance_cache()
