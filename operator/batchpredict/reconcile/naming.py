"""Names and labels of the children of a BatchPrediction, so they are found and never doubled."""

from __future__ import annotations

from enum import StrEnum

from batchpredict.names import MAX_JOB_NAME, fit, run_suffixed

MANAGED_BY = "batchpredict"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "batchpredict.io/name"
LABEL_RUN = "batchpredict.io/run"  # the BatchPrediction's UID: names can be reused, UIDs not
LABEL_ROLE = "batchpredict.io/role"
LABEL_ROUND = "batchpredict.io/round"
LABEL_REDO = "batchpredict.io/redo"  # "all": a manual retry round redoes every failed item
# On an evaluate Job: the key (hash) of the spec.evaluation it measures.
LABEL_EVALUATION = "batchpredict.io/evaluation"
# On a manual retry round's Job: the retry annotation's value it answers (found again after a
# lost status patch, so one request never starts two rounds), and the run's succeeded items
# before it (the reports of earlier rounds are gone by then).
ANNOTATION_RETRY_REQUEST = "batchpredict.io/retry-request"
ANNOTATION_SUCCEEDED_BEFORE = "batchpredict.io/succeeded-before"
ANNOTATION_FAILED_BEFORE = "batchpredict.io/failed-before"  # the items the round redoes
# {code: count} of the final failures a `retry --code` round leaves as they are.
ANNOTATION_KEPT_BEFORE = "batchpredict.io/kept-before"
# `kubectl annotate bp NAME batchpredict.io/retry=<new value>` retries a finished run's failures;
# `batchpredict.io/cancel=true` stops a run and keeps what is done.
ANNOTATION_RETRY = "batchpredict.io/retry"
ANNOTATION_CANCEL = "batchpredict.io/cancel"
# Beside a new retry value: `CODE,CODE` redoes only the final failures of those codes (and the
# items never processed); absent or empty, every failure.
ANNOTATION_RETRY_CODES = "batchpredict.io/retry-codes"
# Set at creation by the chart's MutatingAdmissionPolicy from the requesting user's name.
ANNOTATION_STARTED_BY = "batchpredict.io/started-by"


class Role(StrEnum):
    PLAN = "plan"
    SHARDS = "shards"
    FINALIZE = "finalize"
    EVALUATE = "evaluate"  # re-validation of a finished run from its files


def job_name(
    bp_name: str, run_uid: str, role: Role, round_: int = 0, evaluation_key: str = ""
) -> str:
    """Deterministic Job names from (run UID, round, role; the evaluation spec's key for an
    evaluate step): a second create of the same step fails with 409 and never doubles it, and
    no two runs can ever want the same name."""
    suffix = role.value
    if role is Role.EVALUATE:
        suffix = f"eval-{evaluation_key}"
    elif role is Role.SHARDS:
        suffix = f"r{round_}"
    elif role is Role.FINALIZE and round_ > 0:
        suffix = f"finalize-r{round_}"  # after a retry round
    return run_suffixed(bp_name, run_uid, suffix, MAX_JOB_NAME)


def child_labels(bp_name: str, run_uid: str, role: Role, round_: int = 0) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_NAME: fit(bp_name),
        LABEL_RUN: run_uid,
        LABEL_ROLE: role.value,
        LABEL_ROUND: str(round_),
    }
