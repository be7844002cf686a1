"""BatchPrediction status: what the operator observed (DESIGN.md section 3)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from batchpredict.api.v1alpha1.base import StatusModel


class Phase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    CANCELLED = "Cancelled"


TERMINAL_PHASES = frozenset(
    {Phase.SUCCEEDED, Phase.PARTIALLY_SUCCEEDED, Phase.FAILED, Phase.CANCELLED}
)


class ConditionType(StrEnum):
    MODEL_READY = "ModelReady"
    PROGRESSING = "Progressing"
    STALLED = "Stalled"
    COMPLETE = "Complete"
    FAILED = "Failed"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """A Kubernetes-style condition; lastTransitionTime moves only when status changes."""

    type: str = Field(description="ModelReady, Progressing, Stalled, Complete or Failed.")
    status: ConditionStatus
    reason: str = Field(description="CamelCase reason, e.g. DatasetNotFound.")
    message: str = Field(default="", description="What happened and what to do, for humans.")
    last_transition_time: datetime
    observed_generation: int | None = None


class ItemCounts(StatusModel):
    total: int | None = Field(
        default=None,
        description="Items in the dataset (after select); unset while not known (shards by "
        "byte ranges count their items as they start).",
    )
    succeeded: int = Field(default=0, description="Items with a prediction.")
    failed: int = Field(default=0, description="Items that failed for good.")
    retrying: int = Field(default=0, description="Failed items waiting for a retry round.")
    pending: int | None = Field(default=None, description="Items not done yet.")


class ShardCounts(StatusModel):
    total: int = 0
    byte_ranges: bool | None = Field(
        default=None,
        description="Shards are byte ranges of the input files: items.total stays unset "
        "until every shard has counted its range.",
    )
    active: int = 0
    succeeded: int = 0
    failed: int = 0


class ChildJob(StatusModel):
    name: str
    round: int


class FailedItem(StatusModel):
    id: str = Field(description="The item's id (idField, row number or file path).")
    shard: int
    attempts: int = 1
    code: str = Field(description="Error code, e.g. INVALID_ARGUMENT or MALFORMED_ITEM.")
    message: str
    retryable: bool = False
    next_retry_time: datetime | None = None


class FailureSummaryEntry(StatusModel):
    code: str
    count: int
    retryable: bool = False


class OutputLocations(StatusModel):
    predictions: str | None = Field(default=None, description="Predictions directory or file.")
    failures: str | None = Field(default=None, description="Failure records of every item.")
    manifest: str | None = Field(default=None, description="Summary manifest with counts.")


class EvaluationState(StrEnum):
    EVALUATING = "Evaluating"
    EVALUATED = "Evaluated"
    FAILED = "Failed"


class EvaluationStatus(StatusModel):
    """The headline of the run's evaluation; evaluation.json (at `uri`) has every metric."""

    state: EvaluationState = Field(description="Evaluating, Evaluated or Failed.")
    spec_key: str | None = Field(
        default=None, description="Hash of the spec.evaluation measured (an edit re-validates)."
    )
    metric: str | None = Field(
        default=None,
        description="The headline metric: accuracy (classification), rocAuc (binary), "
        "f1Micro (multilabel) or rmse (regression).",
    )
    value: float | None = Field(default=None, description="The headline metric's value.")
    summary: str | None = Field(
        default=None, description="`accuracy=0.9796` for the printer column."
    )
    scored: int | None = Field(default=None, description="Items with a label and a prediction.")
    unlabelled: int | None = Field(
        default=None, description="Predictions without a usable label (not scored)."
    )
    failed: int | None = Field(default=None, description="Failed items (no prediction).")
    label_coverage: float | None = Field(
        default=None, description="Scored items / all items of the run (0 to 1)."
    )
    uri: str | None = Field(default=None, description="evaluation.json: every metric.")
    message: str | None = Field(default=None, description="Why the evaluation failed.")


class BatchPredictionStatus(StatusModel):
    phase: Phase | None = Field(default=None, description="Where the run is.")
    message: str | None = Field(default=None, description="Why the run is in this phase.")
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    started_by: str | None = Field(default=None, description="Who created the run.")
    start_time: datetime | None = None
    completion_time: datetime | None = None
    last_progress_time: datetime | None = None
    items: ItemCounts | None = None
    progress: str | None = Field(default=None, description="Share of items done, e.g. `63%`.")
    items_per_second: float | None = Field(default=None, description="Recent throughput.")
    eta: str | None = Field(default=None, description="Estimated time left, e.g. `4m10s`.")
    shards: ShardCounts | None = None
    round: int = Field(default=0, description="Retry round (0 is the first pass).")
    next_retry_time: datetime | None = Field(
        default=None, description="When the next retry round starts (phase Retrying)."
    )
    jobs: list[ChildJob] = Field(default_factory=list, description="Indexed Jobs, one per round.")
    failed_items: list[FailedItem] = Field(
        default_factory=list, description="The first failed items; all are in output storage."
    )
    failure_summary: list[FailureSummaryEntry] = Field(
        default_factory=list, description="Failed items counted by error code."
    )
    output: OutputLocations | None = None
    evaluation: EvaluationStatus | None = Field(
        default=None, description="The predictions measured against labels (spec.evaluation)."
    )
    last_retry_request: str | None = Field(
        default=None,
        description="Value of the batchpredict.io/retry annotation last acted on.",
    )
    retry_start_time: datetime | None = Field(
        default=None,
        description="When the last manual retry started: activeDeadlineSeconds counts from "
        "here (a retry gets its own deadline window), else from startTime.",
    )
