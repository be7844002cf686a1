"""Where a run's files live under `output.uri`, and atomic writes over fsspec.

    <output.uri>/
      plan.json                              plan step: {total, shards, chunkItems, ...}
      splits/shard-<shard>.json              byte-range plans: the items of a shard's range
      rounds/<round>/redo-all                a manual retry round: redoes every failure, or
                                             those of the codes it lists ({"codes": [...]})
      rounds/<round>/shard-<shard>/          round 0 = first pass, 1.. = retry rounds
        predictions-<chunk>.jsonl|.parquet   one row per succeeded item (committed last)
        failures-<chunk>.jsonl               one row per failed item (none: no file)
        manifest.json                        written when the shard is done (counts)
      manifest.json                          finalize: counts and locations of the run
      failures.jsonl                         finalize: the final failure of every failed id
      predictions.jsonl|.parquet             finalize, when output.combine: every prediction

Chunk <c> of a shard holds the shard's items c*chunkItems .. (c+1)*chunkItems-1 (in position
order). A chunk is committed when its predictions file exists: the failures file is renamed
into place (or, with no failure, an earlier attempt's is removed) first, so a restarted worker
redoes a chunk it did not commit and overwrites it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from typing import IO, Any

from fsspec.implementations.local import LocalFileSystem

from batchpredict.io.storage import filesystem

_CHUNK = re.compile(r"predictions-(\d+)\.(jsonl|parquet)$")
# Object stores publish an upload whole when it completes, never half of it: they need no
# temporary name (copying one into place costs two more requests per file) and have no
# directories to make (s3fs and gcsfs would create a mistyped bucket).
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs"})


class OutputLayout:
    """Paths of one run's outputs, and the few storage operations the worker needs."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.fs, root = filesystem(self.uri, "spec.output.uri")
        self.root = root.rstrip("/")
        self._local = isinstance(self.fs, LocalFileSystem)
        protocol = self.fs.protocol  # a name, or a tuple of a driver's names
        protocols = {protocol} if isinstance(protocol, str) else set(protocol)
        self._object_store = bool(protocols & _OBJECT_STORES)
        self._made: set[str] = set()  # directories known to exist

    # --- paths --------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def url(self, path: str) -> str:
        """The user-facing location of `path` (with the URI's scheme)."""
        rel = path[len(self.root) :].lstrip("/")
        return f"{self.uri}/{rel}" if rel else self.uri

    @property
    def plan(self) -> str:
        return self.path("plan.json")

    @property
    def summary(self) -> str:
        return self.path("manifest.json")

    @property
    def final_failures(self) -> str:
        return self.path("failures.jsonl")

    def combined(self, ext: str) -> str:
        return self.path(f"predictions.{ext}")

    def split_count(self, shard: int) -> str:
        return self.path("splits", f"shard-{shard:05d}.json")

    def shard_dir(self, round_: int, shard: int) -> str:
        return self.path("rounds", f"{round_:03d}", f"shard-{shard:05d}")

    def predictions_chunk(self, round_: int, shard: int, chunk: int, ext: str) -> str:
        return f"{self.shard_dir(round_, shard)}/predictions-{chunk:06d}.{ext}"

    def failures_chunk(self, round_: int, shard: int, chunk: int) -> str:
        return f"{self.shard_dir(round_, shard)}/failures-{chunk:06d}.jsonl"

    def shard_manifest(self, round_: int, shard: int) -> str:
        return f"{self.shard_dir(round_, shard)}/manifest.json"

    def redo_all_marker(self, round_: int) -> str:
        """Present when round `round_` redoes every failure (a manual retry), not only the
        retryable ones: later rounds and finalize must know to derive the same item lists."""
        return self.path("rounds", f"{round_:03d}", "redo-all")

    # --- storage ------------------------------------------------------------------------
    @contextlib.contextmanager
    def open_atomic(self, path: str) -> Iterator[IO[bytes]]:
        """Write `path` so that readers never see half of it: on an object store one upload,
        published when it completes; elsewhere a temporary name beside it, then a rename."""
        if self._object_store:
            handle = self.fs.open(path, "wb")
            try:
                yield handle
                handle.close()  # completes the upload
            except BaseException:
                handle.discard()  # abandon the upload: nothing reaches the store
                handle.closed = True  # and closing it (s3fs does when collected) must not finish it
                raise
            return
        directory, name = path.rsplit("/", 1)
        if directory not in self._made:
            self.fs.makedirs(directory, exist_ok=True)
            self._made.add(directory)
        temp = f"{directory}/.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        if self._local:  # the common case (a mounted volume): plain files, a third the CPU
            try:
                with open(temp, "wb") as handle:
                    yield handle
                os.replace(temp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(temp)
            return
        try:
            with self.fs.open(temp, "wb") as handle:
                yield handle
            self.fs.mv(temp, path)
        finally:
            if self.fs.exists(temp):
                self.fs.rm(temp)

    def write_atomic(self, path: str, data: bytes) -> None:
        with self.open_atomic(path) as handle:
            handle.write(data)

    def remove(self, path: str) -> None:
        """Remove `path` if it is there; raises when the store refuses."""
        with contextlib.suppress(FileNotFoundError):
            if self._local:
                os.remove(path)
            else:
                # Not fs.rm: s3fs deletes in bulk there and ignores a key it failed to delete.
                self.fs.rm_file(path)

    def write_json(self, path: str, value: Any) -> None:
        self.write_atomic(path, json.dumps(value, indent=2, sort_keys=True).encode() + b"\n")

    def read_json(self, path: str) -> Any:
        with self.fs.open(path, "rb") as handle:
            return json.loads(handle.read())

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def foreign_entry(self) -> str | None:
        """Something in the output location that no run of ours wrote (no plan.json beside
        it), or None when the location is missing or empty."""
        if not self.fs.exists(self.root) or not self.fs.isdir(self.root):
            return None
        entries = self.fs.ls(self.root, detail=False)
        return self.url(str(entries[0])) if entries else None

    def committed_chunks(self, round_: int, shard: int) -> dict[int, str]:
        """Chunk number -> predictions file, for the chunks a previous attempt committed."""
        directory = self.shard_dir(round_, shard)
        if not self.fs.exists(directory):
            return {}
        chunks = {}
        for path in self.fs.ls(directory, detail=False):
            match = _CHUNK.search(path)
            if match:
                chunks[int(match.group(1))] = path
        return chunks

    def read_jsonl(self, path: str) -> list[dict[str, Any]]:
        with self.fs.open(path, "rb") as handle:
            return [json.loads(line) for line in handle if line.strip()]
