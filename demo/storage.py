"""The demo's object store: moto's S3 server on loopback, as any S3-compatible endpoint (MinIO,
Ceph, a cloud's S3) would serve a real cluster. The pods run in containers that see only their
image and volumes, and Pod Security "restricted" forbids hostPath volumes, so the data goes
where a real user's data is: in a bucket, read and written with credentials from a Secret.

`start_object_store` runs `python -m moto.server` in its own session (it keeps running after
`make demo`, like Triton; `make demo-down` stops it by its recorded pid). moto keeps objects in
memory and takes any credentials.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import s3fs

BUCKET = "batchpredict-demo"
# moto takes any credentials; the demo hands these to the pods through a Secret.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo-secret"}
MARK = "moto.server"


class ObjectStoreError(RuntimeError):
    """moto's S3 server did not start; the message has its log's tail."""


@dataclass(frozen=True)
class ObjectStore:
    """A running S3 endpoint and a client of it."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def fs(self) -> s3fs.S3FileSystem:
        return s3fs.S3FileSystem(
            key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=self.endpoint,
            use_listings_cache=False,
            skip_instance_cache=True,
        )

    def upload(self, local: Path, key: str) -> str:
        """Copy directory `local` to s3://BUCKET/key/; that URI."""
        fs = self.fs()
        if not fs.exists(BUCKET):
            fs.mkdir(BUCKET)
        fs.put(f"{local}/", f"{BUCKET}/{key}/", recursive=True)
        return f"s3://{BUCKET}/{key}"

    def upload_file(self, local: Path, key: str) -> str:
        """Copy file `local` to s3://BUCKET/key; that URI."""
        fs = self.fs()
        if not fs.exists(BUCKET):
            fs.mkdir(BUCKET)
        fs.put_file(str(local), f"{BUCKET}/{key}")
        return f"s3://{BUCKET}/{key}"

    def download(self, uri: str, local: Path) -> Path:
        """Copy everything under `uri` into directory `local` (replaced); `local`."""
        if local.exists():
            for path in sorted(local.rglob("*"), key=lambda p: -len(p.parts)):
                path.rmdir() if path.is_dir() else path.unlink()
        local.mkdir(parents=True, exist_ok=True)
        self.fs().get(uri.removeprefix("s3://").rstrip("/") + "/", f"{local}/", recursive=True)
        return local

    def stop(self) -> None:
        stop_object_store(self.pid)
        self.process.wait()


def start_object_store(workdir: Path, port: int, timeout: float = 60) -> ObjectStore:
    """moto's S3 server on 127.0.0.1:`port`, ready; its log is `workdir/s3.log`."""
    log_path = workdir / "s3.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", MARK, "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives `make demo`, as Triton does
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(endpoint, timeout=2):
                return ObjectStore(endpoint, process, log_path)
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
    stop_object_store(process.pid)
    process.wait()
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    raise ObjectStoreError(f"moto's S3 server did not start on {endpoint}:\n{tail}")


def _is_object_store(pid: int) -> bool:
    try:
        return MARK in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def stop_object_store(pid: int | None) -> bool:
    """Stop the S3 server of a demo (by its recorded pid); True if one was running."""
    if pid is None or not _is_object_store(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _is_object_store(pid):
        time.sleep(0.1)
    if _is_object_store(pid):
        os.kill(pid, signal.SIGKILL)
    return True
