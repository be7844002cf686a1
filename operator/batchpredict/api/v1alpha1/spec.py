"""BatchPrediction spec: what the user asks for (DESIGN.md section 3). Its parts live in
serving.py (model, Triton), data.py (input, output) and execution.py (batching, workers,
retries, failure policy)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from batchpredict.api.v1alpha1.base import DNS_SUBDOMAIN, ApiModel, cel, schema_extra
from batchpredict.api.v1alpha1.data import InputSpec, OutputSpec
from batchpredict.api.v1alpha1.evaluation import EvaluationSpec
from batchpredict.api.v1alpha1.execution import BatchingSpec, FailurePolicy, RetrySpec, WorkerSpec
from batchpredict.api.v1alpha1.serving import ModelRef, TritonSpec


def _immutable(field: str) -> dict[str, Any]:
    return schema_extra(
        cel(
            "self == oldSelf",
            f"spec.{field} cannot change once the run started; create a new BatchPrediction",
        )
    )


class BatchPredictionSpec(ApiModel):
    """A batch prediction: score `input` with `model` on `triton`, write to `output`."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": schema_extra(
            cel(
                "!(has(self.itemsPerShard) && has(self.shards))",
                "set at most one of itemsPerShard and shards",
            ),
        )
    }

    model: ModelRef = Field(
        description="The Triton model to run.", json_schema_extra=_immutable("model")
    )
    triton: TritonSpec | None = Field(
        default=None,
        description="The Triton server: `url` or `sidecar`; the operator's default server "
        "(Helm value defaultTritonUrl) when left out.",
    )
    input: InputSpec = Field(
        description="The dataset to score.", json_schema_extra=_immutable("input")
    )
    output: OutputSpec = Field(
        description="Where predictions and failure records go.",
        json_schema_extra=_immutable("output"),
    )
    batching: BatchingSpec = Field(
        default=BatchingSpec(), description="Request batch size and in-flight concurrency."
    )
    parallelism: int = Field(default=4, ge=1, le=10000, description="Worker pods at once.")
    items_per_shard: int | None = Field(
        default=None, ge=1, description="Items per shard (Job completion index)."
    )
    shards: int | None = Field(
        default=None,
        ge=1,
        le=100000,
        description="Number of shards; 4 x parallelism when neither it nor itemsPerShard is set, "
        "so the Job balances.",
    )
    worker: WorkerSpec = Field(default=WorkerSpec(), description="Where and how worker pods run.")
    retry: RetrySpec = Field(default=RetrySpec(), description="Request and round retries.")
    failure_policy: FailurePolicy = Field(
        default=FailurePolicy(),
        description="When failed items make the run Failed instead of PartiallySucceeded.",
    )
    suspend: bool = Field(default=False, description="Pause the run (pods stop; progress is kept).")
    queue_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        description="Kueue LocalQueue for the shard Jobs: each is created suspended and runs "
        "when Kueue admits its Workload; suspend then deactivates the Workload (Kueue owns the "
        "Job's suspend) and resume puts it back in the queue.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the resource this long after it finished."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the run when it runs longer than this."
    )
    stall_timeout_seconds: int = Field(
        default=600, ge=10, description="No progress for this long sets the Stalled condition."
    )
    evaluation: EvaluationSpec | None = Field(
        default=None,
        description="Measure the predictions against labels when the run ends "
        "(evaluation.json beside the manifest, status.evaluation). Setting or editing it on "
        "a finished run re-validates that run from its output files, without predicting.",
    )

    def carried_fields(self) -> list[str]:
        """Input fields written beside each prediction: output.includeFields, and the label
        and slice fields the evaluation reads from the predictions."""
        extra = self.evaluation.carried_fields() if self.evaluation else []
        return list(dict.fromkeys([*self.output.include_fields, *extra]))

    @model_validator(mode="after")
    def _one_sharding(self) -> BatchPredictionSpec:
        if self.items_per_shard is not None and self.shards is not None:
            raise ValueError("set at most one of itemsPerShard and shards")
        return self

    @model_validator(mode="after")
    def _sidecar_volumes_exist(self) -> BatchPredictionSpec:
        """The Triton sidecar mounts volumes of worker.volumes: each name must be one."""
        sidecar = self.triton.sidecar if self.triton else None
        if sidecar is None:
            return self
        volumes = [str(v.get("name")) for v in self.worker.volumes or []]
        wanted = [("triton.sidecar.modelVolume", sidecar.model_volume)]
        wanted += [
            (f"triton.sidecar.volumeMounts[{i}].name", str(m.get("name")))
            for i, m in enumerate(sidecar.volume_mounts or [])
        ]
        for field, name in wanted:
            if name is not None and name not in volumes:
                raise ValueError(
                    f"{field}: no volume named {name!r} in worker.volumes "
                    f"(volumes: {', '.join(volumes) or 'none'}); add it there"
                )
        return self
