"""The one reader of a run's outputs (DESIGN.md section 10): its manifest, predictions, final
failures and evaluation, for the console, the evaluation step and the dashboard.

A finished run's `manifest.json` names its prediction files and its final failure record
(`io/layout.py` says where they live); nothing else decides which files hold the answers. A run
that has not finished has no manifest: its predictions so far are the chunks its shards have
committed, and its failures so far are in the chunks' failure files (some of them will be
retried, so they are not final).

Every read goes through fsspec with the caller's own credentials (local path, s3://, gs://),
streams file by file, and keeps memory flat in the size of the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow.parquet as pq

from batchpredict.io.layout import OutputLayout

EVALUATION_FILE = "evaluation.json"
_BATCH_ROWS = 4096


class OutputsNotFoundError(Exception):
    """The output location holds no run of ours (no plan.json): nothing to read."""


class RunOutputs:
    """Read access to the outputs of the run written under `uri` (its `spec.output.uri`)."""

    def __init__(self, uri: str) -> None:
        self.layout = OutputLayout(uri)

    @property
    def uri(self) -> str:
        return self.layout.uri

    # --- the summary files --------------------------------------------------------------
    def _json(self, path: str) -> dict[str, Any] | None:
        try:
            value = self.layout.read_json(path)
        except FileNotFoundError:
            return None
        return value if isinstance(value, dict) else None

    def plan(self) -> dict[str, Any]:
        plan = self._json(self.layout.plan)
        if plan is None:
            raise OutputsNotFoundError(
                f"{self.uri} holds no batchpredict run (no plan.json): the run has not planned "
                "yet, or spec.output.uri names another place"
            )
        return plan

    def manifest(self) -> dict[str, Any] | None:
        """The finalize step's summary (counts and locations), or None before it ran."""
        return self._json(self.layout.summary)

    def finished(self) -> bool:
        return self.manifest() is not None

    def evaluation(self) -> dict[str, Any] | None:
        """The metrics the finalize step computed against labels, when the run has them."""
        return self._json(self.layout.path(EVALUATION_FILE))

    @property
    def evaluation_path(self) -> str:
        return self.layout.path(EVALUATION_FILE)

    def write_evaluation(self, evaluation: dict[str, Any]) -> str:
        """Write evaluation.json beside the manifest (atomically); returns its URL."""
        self.layout.write_json(self.evaluation_path, evaluation)
        return self.layout.url(self.evaluation_path)

    def shard_manifests(self) -> dict[tuple[int, int], dict[str, Any]]:
        """{(round, shard): the manifest each finished shard wrote (counts, speed)}."""
        rounds = self.layout.path("rounds")
        if not self.layout.fs.exists(rounds):
            return {}
        found: dict[tuple[int, int], dict[str, Any]] = {}
        for path in self.layout.fs.glob(f"{rounds}/*/shard-*/manifest.json"):
            value = self._json(str(path))
            if value is not None and "round" in value and "shard" in value:
                found[int(value["round"]), int(value["shard"])] = value
        return found

    # --- which files hold the answers ----------------------------------------------------
    def prediction_files(self) -> list[str]:
        """Paths (within the store) of the files that hold predictions, in a stable order:
        the manifest's list once finished, else every chunk committed so far."""
        manifest = self.manifest()
        if manifest is not None:
            return [self._path(url) for url in manifest.get("predictionFiles", [])]
        return self._committed("predictions-")

    def _committed(self, prefix: str) -> list[str]:
        rounds = self.layout.path("rounds")
        if not self.layout.fs.exists(rounds):
            return []
        found = self.layout.fs.glob(f"{rounds}/*/shard-*/{prefix}*")
        return sorted(str(p) for p in found if not str(p).rsplit("/", 1)[-1].startswith("."))

    def _path(self, url: str) -> str:
        """A store path from a URL the manifest wrote (it may use the URI's scheme)."""
        if url.startswith(self.uri):
            return self.layout.path(url[len(self.uri) :].lstrip("/"))
        return url

    # --- rows -----------------------------------------------------------------------------
    def predictions(
        self, limit: int | None = None, where: Mapping[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Prediction rows (id, the included input fields, the outputs), file by file;
        `where` keeps the rows whose fields read as the given text."""
        yield from _take(matching(self._rows(self.prediction_files()), where), limit)

    def failures(
        self,
        codes: Iterable[str] = (),
        limit: int | None = None,
        where: Mapping[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Failure records (id, code, message, attempts, retryable, round, shard): the final
        ones once finished, else every failure recorded so far (retryable ones may still be
        retried). `codes` keeps only those codes."""
        wanted = set(codes)
        if self.finished():
            files = (
                [self.layout.final_failures]
                if self.layout.exists(self.layout.final_failures)
                else []
            )
        else:
            files = self._committed("failures-")
        rows = (r for r in self._rows(files) if not wanted or r.get("code") in wanted)
        yield from _take(matching(rows, where), limit)

    def _rows(self, files: Iterable[str]) -> Iterator[dict[str, Any]]:
        for path in files:
            if path.endswith(".parquet"):
                with self.layout.fs.open(path, "rb") as handle:
                    for batch in pq.ParquetFile(handle).iter_batches(batch_size=_BATCH_ROWS):
                        yield from batch.to_pylist()
            else:
                with self.layout.fs.open(path, "rb") as handle:
                    for line in handle:
                        if line.strip():
                            yield json.loads(line)


def _take(rows: Iterator[dict[str, Any]], limit: int | None) -> Iterator[dict[str, Any]]:
    for n, row in enumerate(rows):
        if limit is not None and n >= limit:
            return
        yield row


def field_text(value: Any) -> str:
    """A field as `--where` and the console's tables show it (JSON for lists and objects)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def matching(
    rows: Iterable[dict[str, Any]], where: Mapping[str, str] | None
) -> Iterator[dict[str, Any]]:
    """Rows whose every `where` field reads as the given text (`label=7`, `id=img-3.png`)."""
    if not where:
        yield from rows
        return
    for row in rows:
        if all(k in row and field_text(row[k]) == v for k, v in where.items()):
            yield row
