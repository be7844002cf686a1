"""status.evaluation from what a finalize or evaluate pod said (its termination message).

The operator never reads output files (DESIGN.md section 4): the step that measured the run
leaves the headline in its termination message, a few hundred bytes beside the counts; the
full metrics are in evaluation.json."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from batchpredict.api.v1alpha1.status import (
    TERMINAL_PHASES,
    EvaluationState,
    EvaluationStatus,
)
from batchpredict.reconcile.decision import Decision, Event


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


def refuse_revalidation(decision: Decision, message: str) -> Decision | None:
    """A finished run whose evaluate Job the operator's policy refuses keeps its outcome: only
    its re-validation fails (None: the decision is not a re-validation)."""
    status, evaluation = decision.status, decision.status.evaluation
    if status.phase not in TERMINAL_PHASES or evaluation is None or not decision.create:
        return None
    if evaluation.state is not EvaluationState.EVALUATING or evaluation.spec_key is None:
        return None
    refused = evaluation_failed(evaluation.spec_key, message)
    return dataclasses.replace(
        decision,
        create=[],
        status=status.model_copy(update={"evaluation": refused}),
        events=[Event("Warning", "RevalidationRefused", message)],
    )
