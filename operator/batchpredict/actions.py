"""What a user can do to a run, as the merge patches that do it: the console's verbs and the
dashboard's buttons send these with the user's own credentials, through the same annotations
and spec fields a `kubectl annotate` or `kubectl patch` would set (README "Operating a run")."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from batchpredict.reconcile.naming import (
    ANNOTATION_CANCEL,
    ANNOTATION_RETRY,
    ANNOTATION_RETRY_CODES,
)


def retry_patch(request: str | None = None, codes: Sequence[str] = ()) -> dict[str, Any]:
    """Retry a finished run's failed items: a new value of the retry annotation starts one
    manual retry round (the same value twice starts one). `codes` redoes only the failures
    of those codes (and items never processed); none removes an earlier request's codes."""
    value = request or str(time.time_ns())
    chosen = ",".join(sorted(set(codes))) or None  # null in a merge patch removes it
    return {"metadata": {"annotations": {ANNOTATION_RETRY: value, ANNOTATION_RETRY_CODES: chosen}}}


def suspend_patch(suspend: bool) -> dict[str, Any]:
    """Pause (pods stop, progress is kept) or resume a run."""
    return {"spec": {"suspend": suspend}}


def cancel_patch() -> dict[str, Any]:
    """Stop a run for good; what is done is kept and finalized."""
    return {"metadata": {"annotations": {ANNOTATION_CANCEL: "true"}}}
