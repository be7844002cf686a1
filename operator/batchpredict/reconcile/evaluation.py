"""status.evaluation from what a finalize or evaluate pod said (its termination message).

The operator never reads output files (DESIGN.md section 4): the step that measured the run
leaves the headline in its termination message, a few hundred bytes beside the counts; the
full metrics are in evaluation.json."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from batchpredict.api.v1alpha1.status import EvaluationState, EvaluationStatus


def evaluation_status(data: Mapping[str, Any] | None) -> EvaluationStatus | None:
    """The `evaluation` part of a step's termination message as status, None if absent."""
    summary = (data or {}).get("evaluation")
    if not isinstance(summary, Mapping):
        return None
    try:
        return EvaluationStatus.model_validate(dict(summary))
    except ValidationError as error:
        return EvaluationStatus(
            state=EvaluationState.FAILED,
            spec_key=str(summary.get("specKey") or "") or None,
            message=f"unreadable evaluation summary: {error.error_count()} errors",
        )


def evaluating(key: str, message: str) -> EvaluationStatus:
    return EvaluationStatus(state=EvaluationState.EVALUATING, spec_key=key, message=message)


def evaluation_failed(key: str, message: str) -> EvaluationStatus:
    return EvaluationStatus(state=EvaluationState.FAILED, spec_key=key, message=message)
