"""What a user can do to a run, as the merge patches that do it: the console's verbs and the
dashboard's buttons send these with the user's own credentials, through the same annotations
and spec fields a `kubectl annotate` or `kubectl patch` would set (README "Operating a run")."""

from __future__ import annotations

import time
from typing import Any

from batchpredict.reconcile.naming import ANNOTATION_CANCEL, ANNOTATION_RETRY


def retry_patch(request: str | None = None) -> dict[str, Any]:
    """Retry a finished run's failed items: a new value of the retry annotation starts one
    manual retry round (the same value twice starts one)."""
    value = request or str(time.time_ns())
    return {"metadata": {"annotations": {ANNOTATION_RETRY: value}}}


def suspend_patch(suspend: bool) -> dict[str, Any]:
    """Pause (pods stop, progress is kept) or resume a run."""
    return {"spec": {"suspend": suspend}}


def cancel_patch() -> dict[str, Any]:
    """Stop a run for good; what is done is kept and finalized."""
    return {"metadata": {"annotations": {ANNOTATION_CANCEL: "true"}}}
