"""Parse a BatchPrediction body and turn pydantic errors into messages a user can act on."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from batchpredict.api.v1alpha1 import BatchPrediction, BatchPredictionSpec


class InvalidSpecError(ValueError):
    """A BatchPrediction that cannot run; `problems` name each field and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid BatchPrediction: " + "; ".join(problems))


def describe_errors(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem: `spec.batching.batchSize: must be >= 1 (got 0)`."""
    problems = []
    for detail in error.errors(include_url=False):
        path = ".".join(str(part) for part in (prefix, *detail["loc"]) if part != "")
        message = detail["msg"].removeprefix("Value error, ")
        if (
            detail["type"] not in {"missing", "value_error", "extra_forbidden"}
            and "input" in detail
        ):
            message = f"{message} (got {detail['input']!r})"
        if detail["type"] == "extra_forbidden":
            message = "unknown field; check the spelling against `kubectl explain bp.spec`"
        problems.append(f"{path}: {message}" if path else message)
    return problems


def parse_spec(spec: Mapping[str, Any]) -> BatchPredictionSpec:
    """Validate a spec as the API server stored it; raise InvalidSpecError naming fields."""
    try:
        return BatchPredictionSpec.model_validate(spec)
    except ValidationError as error:
        raise InvalidSpecError(describe_errors(error, prefix="spec")) from None


# Worker pods get the spec as one environment variable, inside the Job object (at most 1.5 MiB
# with everything else): keep well under that, and say which field is too large.
MAX_SPEC_BYTES = 128 * 1024


def check_spec_size(spec: Mapping[str, Any]) -> None:
    """InvalidSpecError naming the largest field when the spec cannot travel to the pods."""
    size = len(json.dumps(spec, separators=(",", ":")))
    if size <= MAX_SPEC_BYTES:
        return
    largest = max(spec, key=lambda k: len(json.dumps(spec[k], separators=(",", ":"))))
    raise InvalidSpecError(
        [
            f"spec: {size} bytes, more than the {MAX_SPEC_BYTES} that fit in a worker pod's "
            f"environment; spec.{largest} is the largest field: move large values to files "
            "or ConfigMaps"
        ]
    )


def parse_batch_prediction(body: Mapping[str, Any]) -> BatchPrediction:
    """Validate a whole BatchPrediction object (as read from YAML or the API)."""
    try:
        bp = BatchPrediction.model_validate(body)
    except ValidationError as error:
        raise InvalidSpecError(describe_errors(error)) from None
    check_spec_size(body.get("spec") or {})
    return bp
