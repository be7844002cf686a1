"""moto's S3 server on loopback, for pods in containers: they see only their image and volumes
(Pod Security "restricted" forbids hostPath), so their data is where a real user's is, in a
bucket, and the run's worker env points them at it.

- `s3` (module fixture): (a client of the server, the env that points a pod at it), with the
  bucket `BUCKET` made.
- `start_moto()`: a started server and its endpoint, with an empty store.
- `download(fs, key, local)`: a run's output prefix copied to a local directory, for the
  shared end-of-run checks that read files (tests/e2e/invariant.py).
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import s3fs
from moto.server import ThreadedMotoServer

BUCKET = "data"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "test-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[ThreadedMotoServer, str]:
    """moto's S3 server on a free loopback port, and its endpoint. Its store starts empty:
    moto keeps buckets in the test process's memory, shared by every server it starts, so
    what an earlier module left there would otherwise still be there."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=30):  # noqa: S310 (loopback http)
        pass
    return server, endpoint


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[s3fs.S3FileSystem, dict[str, str]]]:
    """A client of moto's S3 on loopback, and the env that points a worker pod at it."""
    server, endpoint = start_moto()
    try:
        fs = s3fs.S3FileSystem(
            key=S3_ENV["AWS_ACCESS_KEY_ID"],
            secret=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=endpoint,
            use_listings_cache=False,
            skip_instance_cache=True,
        )
        fs.mkdir(BUCKET)
        yield fs, {**S3_ENV, "AWS_ENDPOINT_URL_S3": endpoint}
    finally:
        server.stop()


def download(fs: s3fs.S3FileSystem, key: str, local: Path) -> Path:
    """Everything under `key` (bucket/prefix) into directory `local`; `local`."""
    local.mkdir(parents=True, exist_ok=True)
    fs.get(key.rstrip("/") + "/", f"{local}/", recursive=True)
    return local
