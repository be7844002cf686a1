"""Names and labels of the children of a BatchPrediction, so they are found and never doubled."""

from __future__ import annotations

import hashlib
from enum import StrEnum

MANAGED_BY = "batchpredict"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "batchpredict.io/name"
LABEL_RUN = "batchpredict.io/run"  # the BatchPrediction's UID: names can be reused, UIDs not
LABEL_ROLE = "batchpredict.io/role"
LABEL_ROUND = "batchpredict.io/round"
LABEL_REDO = "batchpredict.io/redo"  # "all": a manual retry round redoes every failed item
# `kubectl annotate bp NAME batchpredict.io/retry=<new value>` retries a finished run's failures;
# `batchpredict.io/cancel=true` stops a run and keeps what is done.
ANNOTATION_RETRY = "batchpredict.io/retry"
ANNOTATION_CANCEL = "batchpredict.io/cancel"
# Set at creation by the chart's MutatingAdmissionPolicy from the requesting user's name.
ANNOTATION_STARTED_BY = "batchpredict.io/started-by"

# Kubernetes caps label values and Job names at 63 characters (the Job controller puts the Job
# name into pod labels), so long BatchPrediction names are shortened with a stable hash.
MAX_NAME = 63


class Role(StrEnum):
    PLAN = "plan"
    SHARDS = "shards"
    FINALIZE = "finalize"


def fit(value: str, room: int = MAX_NAME) -> str:
    """`value`, or a prefix of it plus a stable hash when it is longer than `room`."""
    if len(value) <= room:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{value[: room - len(digest) - 1].rstrip('-.')}-{digest}"


def short_name(base: str, suffix: str) -> str:
    """`base-suffix` within 63 characters; the suffix always survives."""
    return f"{fit(base, MAX_NAME - len(suffix) - 1)}-{suffix}"


def job_name(bp_name: str, role: Role, round_: int = 0) -> str:
    """Deterministic Job names: a second create of the same step fails with 409, never doubles."""
    if role is Role.SHARDS:
        return short_name(bp_name, f"r{round_}")
    if role is Role.FINALIZE and round_ > 0:
        return short_name(bp_name, f"finalize-r{round_}")  # a manual retry finalizes again
    return short_name(bp_name, role.value)


def child_labels(bp_name: str, run_uid: str, role: Role, round_: int = 0) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_NAME: fit(bp_name),
        LABEL_RUN: run_uid,
        LABEL_ROLE: role.value,
        LABEL_ROUND: str(round_),
    }
