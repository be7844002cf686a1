"""How a run executes: batching, worker pods, retries and the failure policy."""

from __future__ import annotations

from pydantic import Field, model_validator

from batchpredict.api.v1alpha1.base import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ApiModel,
    OpaqueObject,
    Quantity,
    cel,
    schema_extra,
)


class BatchingSpec(ApiModel):
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description=(
            "Items per request, within the model's max_batch_size and 1 GiB of input; "
            "from the model's config when left out."
        ),
    )
    concurrency: int | None = Field(
        default=None, ge=1, le=1024, description="Requests in flight per pod; automatic if unset."
    )


class Toleration(ApiModel):
    key: str | None = None
    operator: str | None = Field(default=None, pattern=r"^(Exists|Equal)$")
    value: str | None = None
    effect: str | None = Field(default=None, pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$")
    toleration_seconds: int | None = None


# The worker's own contract (spec, run uid, round, report target, Secret directories) is set by
# the operator; a run may only tune these.
TUNABLE_WORKER_ENV = ("BATCHPREDICT_CHUNK_ITEMS", "BATCHPREDICT_TRITON_WAIT")
RESERVED_ENV = (
    "names starting with BATCHPREDICT_ are the operator's own (only "
    + " and ".join(TUNABLE_WORKER_ENV)
    + " may be set)"
)


class EnvVar(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": schema_extra(
            cel(
                "!self.name.startsWith('BATCHPREDICT_') || self.name in "
                + str(list(TUNABLE_WORKER_ENV)),
                RESERVED_ENV,
            )
        )
    }

    name: str = Field(min_length=1, description="Environment variable name.")
    value: str | None = None
    value_from: OpaqueObject | None = Field(
        default=None, description="As in a Pod: secretKeyRef, configMapKeyRef, fieldRef."
    )

    @model_validator(mode="after")
    def _not_reserved(self) -> EnvVar:
        if self.name.startswith("BATCHPREDICT_") and self.name not in TUNABLE_WORKER_ENV:
            raise ValueError(f"{self.name}: {RESERVED_ENV}")
        return self


class ResourceRequirements(ApiModel):
    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None


class WorkerSpec(ApiModel):
    image: str | None = Field(
        default=None, description="Worker image; the operator's configured default when unset."
    )
    node_pool: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        description="A node pool defined by the platform team in the operator's Helm values "
        "`nodePools` (nodeSelector, tolerations, affinity and GPU resources in one name). A name "
        "the operator does not know fails the run at once (reason UnknownNodePool) with the "
        "list of known pools. List them with `batchpredict node-pools`, or read the ConfigMap "
        "`<release>-node-pools` in the operator's namespace (label "
        "`batchpredict.io/node-pools=true`) that the chart renders.",
    )
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    affinity: OpaqueObject | None = None
    resources: ResourceRequirements | None = Field(
        default=None, description="Worker container resources (GPUs: `nvidia.com/gpu`)."
    )
    priority_class_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN)
    service_account_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        description="ServiceAccount the worker pods run as (it reads the data and Secrets).",
    )
    env: list[EnvVar] | None = Field(
        default=None,
        description="Extra environment variables of every pod of the run (plan, shards, "
        "finalize); BATCHPREDICT_* names are the operator's own.",
    )
    volumes: list[OpaqueObject] | None = Field(
        default=None,
        description="Pod volumes, e.g. the PersistentVolumeClaim holding the dataset.",
    )
    volume_mounts: list[OpaqueObject] | None = Field(
        default=None, description="Where the worker container mounts `volumes`."
    )


class BackoffSpec(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": schema_extra(
            cel(
                "self.maxSeconds >= self.initialSeconds",
                "backoff.maxSeconds must be at least backoff.initialSeconds",
            )
        )
    }

    initial_seconds: float = Field(default=30, ge=0, description="Delay before the first retry.")
    factor: float = Field(default=2.0, ge=1, le=10, description="Multiplier per retry.")
    max_seconds: float = Field(default=600, ge=0, description="Upper bound of one delay.")
    jitter: float = Field(
        default=0.1, ge=0, le=1, description="Random fraction added to spread retries out."
    )

    @model_validator(mode="after")
    def _max_at_least_initial(self) -> BackoffSpec:
        if self.max_seconds < self.initial_seconds:
            raise ValueError("backoff.maxSeconds must be at least backoff.initialSeconds")
        return self


class RetrySpec(ApiModel):
    request_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Attempts per request for transient Triton errors, inside the worker.",
    )
    request_backoff: BackoffSpec = Field(
        default=BackoffSpec(initial_seconds=0.2, max_seconds=10, factor=2),
        description="Backoff between attempts of one request.",
    )
    max_rounds: int = Field(
        default=3, ge=0, le=50, description="Extra rounds over retryable failed items."
    )
    backoff: BackoffSpec = Field(
        default=BackoffSpec(), description="Delay before each retry round."
    )
    shard_backoff_limit: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Restarts allowed per shard (the Job's backoffLimitPerIndex).",
    )


class FailurePolicy(ApiModel):
    max_failed_items: int | None = Field(
        default=None,
        ge=0,
        description="More failed items than this make the run Failed (PartiallySucceeded up to "
        "it).",
    )
    max_failed_percent: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="A larger share of failed items makes the run Failed.",
    )
