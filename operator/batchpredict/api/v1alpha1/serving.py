"""The model a run uses and the Triton server that serves it."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from batchpredict.api.v1alpha1.base import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ApiModel,
    OpaqueObject,
    cel,
    schema_extra,
)


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


class TritonTls(ApiModel):
    secret_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        description="Secret with `ca.crt` (and `tls.crt`/`tls.key` for mutual TLS) to reach "
        "Triton over TLS.",
    )
    insecure_skip_verify: bool = Field(
        default=False,
        description="Skip server certificate verification (tests only; HTTP only: gRPC "
        "always verifies against `ca.crt`).",
    )


# Where Triton reads a model repository by itself: S3 (and S3-compatible stores), GCS, Azure.
OBJECT_STORE_SCHEMES = ("s3://", "gs://", "as://")
# The tritonserver arguments the operator sets from the sidecar's fields.
SIDECAR_OWNED_ARGS = ("--model-repository", "--http-port", "--grpc-port", "--metrics-port")
SIDECAR_TMP = "/tmp"  # noqa: S108 (an emptyDir: what Triton writes with a read-only root)
# NVIDIA's Triton images run as root but carry the user `triton-server` (uid/gid 1000).
TRITON_IMAGE_USER = 1000
MODEL_VOLUME_RULE = (
    "triton.sidecar.modelVolume names the volume (of worker.volumes) that holds modelRepository "
    "when it is a path; leave it out for an s3://, gs:// or as:// URI, which Triton reads itself"
)


class TritonSidecar(ApiModel):
    """Triton in every worker pod (a native sidecar: an init container with restartPolicy
    Always, started first, stopped when the worker ends). It runs as `runAsUser` with a
    read-only root; what it writes goes to an emptyDir at /tmp (HOME points there)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": schema_extra(
            cel("self.modelRepository.startsWith('/') == has(self.modelVolume)", MODEL_VOLUME_RULE),
            cel(
                "self.httpPort != self.grpcPort && self.httpPort != self.metricsPort"
                " && self.grpcPort != self.metricsPort",
                "triton.sidecar.httpPort, grpcPort and metricsPort must differ",
            ),
        )
    }

    image: str = Field(
        min_length=1,
        description="Triton server image run beside each worker, e.g. "
        "`nvcr.io/nvidia/tritonserver:25.10-py3`; it must have `tritonserver` on its PATH.",
    )
    model_repository: str = Field(
        min_length=1,
        pattern=r"^(/|s3://|gs://|as://)",
        description="Model repository the sidecar serves: an absolute path where `modelVolume` "
        "is mounted (read-only), or an `s3://`, `gs://` or `as://` URI that Triton reads itself "
        "with the pod's credentials (spec.worker.env, e.g. AWS_ACCESS_KEY_ID from a Secret, "
        "and the ServiceAccount's workload identity); other S3-compatible stores: "
        "`s3://host:port/bucket/path` (`s3://https://host:port/...` over HTTPS).",
    )
    model_volume: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        description="Name of the volume in spec.worker.volumes that holds the model repository "
        "(a PersistentVolumeClaim, a ConfigMap, ...); mounted read-only at modelRepository in "
        "the Triton container only. Required when modelRepository is a path.",
    )
    volume_mounts: list[OpaqueObject] | None = Field(
        default=None,
        description="More mounts of spec.worker.volumes into the Triton container, e.g. a "
        "Secret with a GCS key named by GOOGLE_APPLICATION_CREDENTIALS in spec.worker.env.",
    )
    run_as_user: int = Field(
        default=TRITON_IMAGE_USER,
        ge=1,
        description="User the Triton container runs as (never root: Pod Security restricted). "
        "1000 is `triton-server` in NVIDIA's images, which otherwise run as root; set the "
        "user of your own image.",
    )
    http_port: int = Field(
        default=8000,
        ge=1,
        le=65535,
        description="Triton's HTTP port (its startup probe, /v2/health/ready, asks here).",
    )
    grpc_port: int = Field(
        default=8001, ge=1, le=65535, description="Triton's gRPC port (the worker talks to it)."
    )
    metrics_port: int = Field(
        default=8002, ge=1, le=65535, description="Triton's Prometheus metrics port."
    )
    startup_timeout_seconds: int = Field(
        default=600,
        ge=10,
        le=86400,
        description="How long Triton may take to load the models (its startup probe); the "
        "container is restarted when it is not ready by then.",
    )
    args: list[str] = Field(
        default_factory=list,
        description="Extra `tritonserver` command-line arguments (not the model repository or "
        "the ports: those come from the fields above).",
    )
    resources: OpaqueObject | None = Field(
        default=None,
        description="Resources of the Triton container (GPUs go here: `nvidia.com/gpu`); the "
        "node pool's resources when left out.",
    )

    @model_validator(mode="after")
    def _repository_and_ports(self) -> TritonSidecar:
        path = self.model_repository.startswith("/")
        if path != (self.model_volume is not None):
            raise ValueError(MODEL_VOLUME_RULE)
        if path and self.model_repository.rstrip("/") in {"", SIDECAR_TMP}:
            raise ValueError(
                f"triton.sidecar.modelRepository: {self.model_repository} is not a place for "
                "the model volume (/ and /tmp are the container's own)"
            )
        if len({self.http_port, self.grpc_port, self.metrics_port}) < 3:
            raise ValueError("triton.sidecar.httpPort, grpcPort and metricsPort must differ")
        for arg in self.args:
            if arg.split("=", 1)[0] in SIDECAR_OWNED_ARGS:
                raise ValueError(
                    f"triton.sidecar.args: {arg.split('=', 1)[0]} is set from the sidecar's "
                    "fields (modelRepository, httpPort, grpcPort, metricsPort); set those instead"
                )
        return self


class TritonProtocol(StrEnum):
    GRPC = "grpc"
    HTTP = "http"


HEADERS_NEED_TLS = (
    "triton.headersSecret needs TLS: a grpcs:// or https:// triton.url, or triton.tls; set "
    "triton.allowHeadersWithoutTls: true only for a server on a network you trust"
)
HEADERS_NEED_TLS_RULE = (
    "!has(self.headersSecret) || has(self.sidecar) || has(self.tls)"
    " || (has(self.url) && (self.url.startsWith('grpcs://') || self.url.startsWith('https://')))"
    " || (has(self.allowHeadersWithoutTls) && self.allowHeadersWithoutTls)"
)


class TritonSpec(ApiModel):
    """Where the model is served: an existing server, or a Triton sidecar in each worker pod."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": schema_extra(
            cel(
                "has(self.url) != has(self.sidecar)",
                "set exactly one of triton.url (an existing server) and triton.sidecar",
            ),
            cel(HEADERS_NEED_TLS_RULE, HEADERS_NEED_TLS),
            cel(
                "!has(self.headersSecret) || !has(self.tls) || !has(self.tls.insecureSkipVerify)"
                " || !self.tls.insecureSkipVerify",
                "triton.headersSecret cannot go with triton.tls.insecureSkipVerify: the headers "
                "would go to any server that answers",
            ),
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
    allow_headers_without_tls: bool = Field(
        default=False,
        description="Send headersSecret's keys to a server reached without TLS (in clear text). "
        "Off by default: headers (auth tokens) need a grpcs://, https:// or triton.tls server.",
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
        if self.headers_secret and not self.allow_headers_without_tls and not self.secure():
            raise ValueError(HEADERS_NEED_TLS)
        if self.headers_secret and self.tls is not None and self.tls.insecure_skip_verify:
            raise ValueError(
                "triton.headersSecret cannot go with triton.tls.insecureSkipVerify: the headers "
                "would go to any server that answers"
            )
        return self

    def secure(self) -> bool:
        """The worker reaches the server over TLS (or it is the pod's own sidecar)."""
        return (
            self.sidecar is not None
            or self.tls is not None
            or (self.url or "").startswith(("grpcs://", "https://"))
        )

    def resolved_protocol(self) -> TritonProtocol:
        """The protocol to speak: explicit, else from the URL scheme, else gRPC."""
        if self.protocol is not None:
            return self.protocol
        if self.url and self.url.startswith(("http://", "https://")):
            return TritonProtocol.HTTP
        return TritonProtocol.GRPC
