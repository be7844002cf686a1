"""What one reconcile decides: the new status, the Jobs to create or patch, the Events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.api.v1alpha1.status import BatchPredictionStatus, OutputLocations, Phase


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Decision:
    status: BatchPredictionStatus
    create: list[dict[str, Any]] = field(default_factory=list)
    # (Job name, merge patch of its spec): suspend and parallelism follow the BatchPrediction.
    patch_jobs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # (Workload name, merge patch): a queued run is suspended and resumed through Kueue.
    patch_workloads: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    delete_self: bool = False  # ttlSecondsAfterFinished ran out
    # Progress reports of a finished run whose counts are in its stored status.
    delete_reports: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def output_locations(spec: BatchPredictionSpec) -> OutputLocations:
    """Where finalize leaves the run's results (batchpredict.io.layout)."""
    base = spec.output.uri.rstrip("/")
    predictions = (
        f"{base}/predictions.{spec.output.format.value}"
        if spec.output.combine
        else f"{base}/rounds/"
    )
    return OutputLocations(
        predictions=predictions, failures=f"{base}/failures.jsonl", manifest=f"{base}/manifest.json"
    )


def transition_events(
    previous: BatchPredictionStatus, current: BatchPredictionStatus
) -> list[Event]:
    if previous.phase == current.phase and previous.round == current.round:
        return []
    warning = current.phase in {Phase.FAILED, Phase.PARTIALLY_SUCCEEDED, Phase.RETRYING}
    reason = current.phase.value if current.phase else "Unknown"
    message = current.message or reason
    if current.round != previous.round and current.phase is Phase.RUNNING:
        reason, message = "RetryRoundStarted", f"round {current.round} started: {message}"
    return [Event(type="Warning" if warning else "Normal", reason=reason, message=message)]
