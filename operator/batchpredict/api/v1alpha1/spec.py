"""BatchPrediction spec: what the user asks for (DESIGN.md section 3)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, model_validator

from batchpredict.api.v1alpha1.base import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    INT_OR_STRING,
    PRESERVE_UNKNOWN,
    ApiModel,
    cel,
    schema_extra,
)

Quantity = Annotated[int | str, Field(json_schema_extra=INT_OR_STRING)]
OpaqueObject = Annotated[dict[str, Any], Field(json_schema_extra=PRESERVE_UNKNOWN)]


class DataType(StrEnum):
    """Triton tensor data types (the `TYPE_` prefix of model configs dropped)."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"


class TensorInput(ApiModel):
    name: str = Field(min_length=1, description="Name of the model's input tensor.")
    field: str | None = Field(
        default=None,
        description="Dataset field that feeds this tensor (after preprocessing); "
        "defaults to the tensor name. Use `$item` for the whole item (files: the decoded image).",
    )
    dtype: DataType | None = Field(
        default=None, description="Tensor data type; taken from the model metadata when left out."
    )
    shape: list[int] | None = Field(
        default=None,
        description="Shape of one item's tensor, without the batch dimension (-1 for variable); "
        "taken from the model metadata when left out.",
    )


class Postprocess(StrEnum):
    """What to keep of an output tensor."""

    NONE = "none"
    ARGMAX = "argmax"
    TOPK = "topk"


class TensorOutput(ApiModel):
    name: str = Field(min_length=1, description="Name of the model's output tensor.")
    field: str | None = Field(
        default=None, description="Field name in the predictions; defaults to the tensor name."
    )
    postprocess: Postprocess = Field(
        default=Postprocess.NONE,
        description="`none` keeps the tensor, `argmax` the index of the largest value, "
        "`topk` the `k` best indices with their scores.",
    )
    k: int = Field(default=5, ge=1, le=1000, description="How many entries `topk` keeps.")


class ModelRef(ApiModel):
    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Name of the model in Triton's model repository.",
    )
    version: str | None = Field(
        default=None,
        pattern=r"^[0-9]+$",
        description="Model version to use; Triton's version policy decides when left out.",
    )
    inputs: list[TensorInput] | None = Field(
        default=None,
        description="How dataset fields map to input tensors; taken from Triton's model "
        "metadata when left out (a single-input model needs no mapping).",
    )
    outputs: list[TensorOutput] | None = Field(
        default=None, description="Output tensors to keep; all of them when left out."
    )


class SecretKeyRef(ApiModel):
    name: str = Field(pattern=DNS_SUBDOMAIN, description="Secret in the run's namespace.")
    key: str = Field(min_length=1, description="Key inside the Secret.")


class TritonTls(ApiModel):
    secret_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        description="Secret with `ca.crt` (and `tls.crt`/`tls.key` for mutual TLS) to reach "
        "Triton over TLS.",
    )
    insecure_skip_verify: bool = Field(
        default=False, description="Skip server certificate verification (tests only)."
    )


class TritonSidecar(ApiModel):
    image: str = Field(min_length=1, description="Triton server image run beside each worker.")
    model_repository: str = Field(
        min_length=1,
        description="Model repository the sidecar serves: a path inside the pod (from a volume) "
        "or an `s3://`/`gs://` URI.",
    )
    args: list[str] = Field(
        default_factory=list, description="Extra `tritonserver` command-line arguments."
    )
    resources: OpaqueObject | None = Field(
        default=None,
        description="Resources of the Triton container (GPUs go here: `nvidia.com/gpu`).",
    )


class TritonProtocol(StrEnum):
    GRPC = "grpc"
    HTTP = "http"


class TritonSpec(ApiModel):
    """Where the model is served: an existing server, or a Triton sidecar in each worker pod."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": schema_extra(
            cel(
                "has(self.url) != has(self.sidecar)",
                "set exactly one of triton.url (an existing server) and triton.sidecar",
            )
        )
    }

    url: str | None = Field(
        default=None,
        pattern=r"^((grpc|grpcs|http|https)://)?[A-Za-z0-9.\-\[\]:]+(:[0-9]+)?/?$",
        description="Address of an existing Triton server, e.g. `triton.models:8001` (gRPC) or "
        "`http://triton.models:8000`. The scheme picks the protocol; gRPC without one.",
    )
    protocol: TritonProtocol | None = Field(
        default=None, description="`grpc` or `http`; derived from the URL scheme when left out."
    )
    tls: TritonTls | None = Field(default=None, description="TLS to reach Triton.")
    headers_secret: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        description="Secret whose keys/values are sent as request headers (auth tokens).",
    )
    timeout_seconds: float = Field(
        default=60, gt=0, le=3600, description="Deadline of one inference request."
    )
    sidecar: TritonSidecar | None = Field(
        default=None, description="Run Triton as a native sidecar of every worker pod instead."
    )

    @model_validator(mode="after")
    def _exactly_one_server(self) -> TritonSpec:
        if (self.url is None) == (self.sidecar is None):
            raise ValueError(
                "set exactly one of triton.url (an existing server) and triton.sidecar"
            )
        return self

    def resolved_protocol(self) -> TritonProtocol:
        """The protocol to speak: explicit, else from the URL scheme, else gRPC."""
        if self.protocol is not None:
            return self.protocol
        if self.url and self.url.startswith(("http://", "https://")):
            return TritonProtocol.HTTP
        return TritonProtocol.GRPC


class InputFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"
    FILES = "files"


class Select(ApiModel):
    """Which part of the dataset to score."""

    glob: str | None = Field(
        default=None, description="For `files` and multi-file datasets: keep paths matching it."
    )
    columns: list[str] | None = Field(
        default=None, description="Read only these fields (Parquet/CSV column projection)."
    )
    where: dict[str, str] | None = Field(
        default=None,
        description="Keep items whose fields equal these values (compared as text).",
    )
    limit: int | None = Field(default=None, ge=1, description="Keep at most this many items.")


class ImagePreprocess(ApiModel):
    resize: list[int] | None = Field(
        default=None, min_length=2, max_length=2, description="[height, width] to resize to."
    )
    mode: str = Field(
        default="RGB", pattern=r"^(RGB|L|RGBA)$", description="Pillow mode: RGB, L or RGBA."
    )
    scale: float = Field(default=1.0 / 255.0, description="Pixel values are multiplied by it.")
    mean: list[float] | None = Field(default=None, description="Per-channel mean subtracted.")
    std: list[float] | None = Field(default=None, description="Per-channel std divided by.")
    channels_first: bool = Field(default=False, description="CHW instead of HWC.")


class Preprocess(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": schema_extra(
            cel(
                "!(has(self.image) && has(self.function))",
                "preprocess: set at most one of image and function",
            )
        )
    }

    image: ImagePreprocess | None = Field(
        default=None, description="Decode, resize and normalize images (built in)."
    )
    function: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$",
        description="`module:function` importable in the worker image; called with each item "
        "(a dict) and returns the dict of fields for the input tensors.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Preprocess:
        if self.image is not None and self.function is not None:
            raise ValueError("preprocess: set at most one of image and function")
        return self


class InputSpec(ApiModel):
    uri: str = Field(
        min_length=1,
        description="Dataset location: a path in the pod (volume mount), `s3://`, `gs://`, "
        "`http(s)://`; a directory or glob for many files.",
    )
    format: InputFormat = Field(
        description="`jsonl`, `csv`, `parquet`, or `files` (one item per file, e.g. images)."
    )
    id_field: str | None = Field(
        default=None,
        description="Field holding a stable item id; the row number (or the relative path for "
        "`files`) when left out.",
    )
    select: Select | None = Field(default=None, description="Score a subset of the dataset.")
    preprocess: Preprocess | None = Field(default=None, description="Transform items into tensors.")


class OutputFormat(StrEnum):
    JSONL = "jsonl"
    PARQUET = "parquet"


class OutputSpec(ApiModel):
    uri: str = Field(
        min_length=1,
        description="Directory for predictions, failures and manifests (path, `s3://`, `gs://`).",
    )
    format: OutputFormat = Field(default=OutputFormat.JSONL, description="`jsonl` or `parquet`.")
    include_fields: list[str] = Field(
        default_factory=list, description="Input fields copied next to each prediction."
    )
    combine: bool = Field(
        default=False, description="Also write all predictions as one file at the end."
    )


class BatchingSpec(ApiModel):
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="Items per request; from the model's max_batch_size when left out.",
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


class EnvVar(ApiModel):
    name: str = Field(min_length=1, description="Environment variable name.")
    value: str | None = None
    value_from: OpaqueObject | None = Field(
        default=None, description="As in a Pod: secretKeyRef, configMapKeyRef, fieldRef."
    )


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
        "(nodeSelector, tolerations, affinity and GPU resources in one name).",
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
    env: list[EnvVar] | None = Field(default=None, description="Extra environment variables.")
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
        description="Kueue LocalQueue; the Job is created suspended until Kueue admits it.",
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

    @model_validator(mode="after")
    def _one_sharding(self) -> BatchPredictionSpec:
        if self.items_per_shard is not None and self.shards is not None:
            raise ValueError("set at most one of itemsPerShard and shards")
        return self
