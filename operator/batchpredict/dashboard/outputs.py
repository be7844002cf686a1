"""The run page's results, downloads and thumbnails, read through `RunOutputs` (the one reader
of a run's outputs, DESIGN.md section 10) with the dashboard's own credentials. Blocking file
I/O: the server calls these in threads."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from typing import Any

import fsspec
from PIL import Image

from batchpredict.dashboard.views import looks_like_image
from batchpredict.io.results import OutputsNotFoundError, RunOutputs

THUMBNAIL_PIXELS = 96
MAX_PAGE = 200


def results_page(output_uri: str, offset: int, limit: int) -> dict[str, Any]:
    """Rows `offset`..`offset+limit` of the predictions (id, the included input fields, the
    outputs), the columns they have, and whether more follow."""
    limit = max(1, min(limit, MAX_PAGE))
    outputs = RunOutputs(output_uri)
    try:
        outputs.plan()
    except OutputsNotFoundError as error:
        return {"rows": [], "columns": [], "more": False, "finished": False, "note": str(error)}
    rows: list[dict[str, Any]] = []
    more = False
    for n, row in enumerate(outputs.predictions(limit=offset + limit + 1)):
        if n < offset:
            continue
        if len(rows) == limit:
            more = True
            break
        rows.append({key: _cell(value) for key, value in row.items()})
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    return {
        "rows": rows,
        "columns": columns,
        "more": more,
        "finished": outputs.finished(),
        "offset": offset,
    }


def _cell(value: Any) -> Any:
    """Numbers, strings and small lists as they are; anything else as short JSON text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    text = json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def download_lines(output_uri: str, what: str) -> Iterator[bytes]:
    """The run's predictions or failures as JSONL, whatever format they were written in."""
    outputs = RunOutputs(output_uri)
    rows = outputs.predictions() if what == "predictions" else outputs.failures()
    for row in rows:
        yield (json.dumps(row, default=str) + "\n").encode()


def summary_file(output_uri: str, what: str) -> dict[str, Any] | None:
    outputs = RunOutputs(output_uri)
    return outputs.manifest() if what == "manifest" else outputs.evaluation()


def dataset_base(input_uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the directory that item ids of a `files` dataset are relative to
    (the same rule as the worker's reader: a directory, a glob's fixed prefix, or a file's
    directory)."""
    fs, root = fsspec.core.url_to_fs(input_uri)
    if any(ch in root for ch in "*?["):
        return fs, root.split("*")[0].rsplit("/", 1)[0]
    if fs.isdir(root):
        return fs, root.rstrip("/")
    return fs, root.rsplit("/", 1)[0]


def thumbnail(input_uri: str, item_id: str) -> bytes:
    """A small PNG of the image item `item_id` of a `files` dataset. Ids only name files
    below the dataset's directory: `..` or an absolute id is refused."""
    parts = item_id.split("/")
    if not looks_like_image(item_id) or item_id.startswith("/") or ".." in parts:
        raise ValueError(f"{item_id!r} is not an image of this dataset")
    fs, base = dataset_base(input_uri)
    with fs.open(f"{base}/{item_id}", "rb") as handle:
        image = Image.open(handle)
        image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PNG")
    return out.getvalue()
