"""BatchPredictionShard: the progress report one worker pod writes for its shard.

In the manner of Argo's WorkflowTaskResult: the worker writes only this object (RBAC allows it
nothing else), the operator reads them through a kopf index and folds them into the
BatchPrediction's status. One object per (run, round, shard), named by `report_name`.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from batchpredict.api.v1alpha1.base import API_VERSION, StatusModel
from batchpredict.api.v1alpha1.status import FailedItem
from batchpredict.names import MAX_OBJECT_NAME, run_suffixed

REPORT_KIND = "BatchPredictionShard"
REPORT_PLURAL = "batchpredictionshards"
REPORT_SINGULAR = "batchpredictionshard"
# Labels to select a run's reports with (`-l batchpredict.io/run=<UID>`); the operator trusts
# a report only through its owner reference to the run.
LABEL_RUN = "batchpredict.io/run"  # the run's UID
LABEL_NAME = "batchpredict.io/name"  # the run's name, shortened to fit a label
LABEL_ROUND = "batchpredict.io/round"
LABEL_SHARD = "batchpredict.io/shard"
# What a shard pod waits for instead of failing (ShardProgress.waitingReason).
WAITING_TRITON = "TritonUnavailable"


class ShardProgress(StatusModel):
    """Counts for one shard in one round; monotonic while the shard runs."""

    items_total: int = Field(default=0, description="Items assigned to this shard this round.")
    succeeded: int = Field(default=0, description="Items with a committed prediction.")
    failed: int = Field(default=0, description="Items with a committed failure record.")
    retryable_failed: int = Field(
        default=0, description="Of `failed`, how many a later round may retry."
    )
    items_per_second: float = Field(default=0.0, description="Throughput of this pod.")
    started_at: datetime | None = None
    updated_at: datetime | None = None
    finished: bool = Field(default=False, description="Every item of the shard is committed.")
    failure_counts: dict[str, int] = Field(
        default_factory=dict, description="Failed items by error code."
    )
    retryable_counts: dict[str, int] = Field(
        default_factory=dict, description="Of `failureCounts`, the retryable ones by code."
    )
    failed_sample: list[FailedItem] = Field(
        default_factory=list, description="The first few failed items of this shard."
    )
    message: str | None = Field(
        default=None, description="Why the shard stopped, if it broke, or what it waits for."
    )
    waiting_reason: str | None = Field(
        default=None,
        description="Set while the pod waits for a dependency (TritonUnavailable); "
        "kept in the final report when it gave up waiting.",
    )


class ShardReportSpec(StatusModel):
    batch_prediction: str = Field(description="Name of the BatchPrediction.")
    run_uid: str = Field(description="UID of the BatchPrediction (names can be reused).")
    round: int = Field(ge=0)
    shard: int = Field(ge=0)


class BatchPredictionShard(StatusModel):
    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = Field(default=REPORT_KIND)
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: ShardReportSpec
    progress: ShardProgress = Field(default_factory=ShardProgress)


def report_name(batch_prediction: str, run_uid: str, round_: int, shard: int) -> str:
    """Stable object name, so a restarted pod updates its report instead of adding one; unique
    per run (a reused name gets new reports) and within 253 characters for any run name."""
    return run_suffixed(batch_prediction, run_uid, f"r{round_}-s{shard}", MAX_OBJECT_NAME)
