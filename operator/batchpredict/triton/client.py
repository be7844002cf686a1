"""A thin async wrapper over tritonclient's gRPC (default) and HTTP clients.

It knows the one model a run uses: `model_info()` reads metadata and config, `infer()` sends one
batch and returns numpy outputs or raises `RequestError`.

Over gRPC, inference skips tritonclient's per-call Python layer: `encode()` builds the
ModelInferRequest's wire bytes (in the worker's reading thread, copying the tensors once) and
`infer()` sends them as they are. Per request that leaves the event loop, which is what limits
throughput for a fast model, only the send and the answer (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpc_aio
from numpy.typing import NDArray
from tritonclient.grpc import InferResult, service_pb2
from tritonclient.utils import serialize_byte_tensor

from batchpredict.api.v1alpha1.serving import TritonProtocol
from batchpredict.triton.errors import RequestError, classify


class ModelUnavailableError(Exception):
    """The model cannot be used; `reason` is ModelNotFound or ModelNotReady."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str
    shape: list[int]  # without the batch dimension when the model batches


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]
    max_batch_size: int
    instances: int = 1
    preferred_batch_sizes: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files from the Secret the operator mounts (ca.crt, tls.crt, tls.key)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False

    @classmethod
    def from_dir(cls, directory: Path, insecure: bool = False) -> TlsFiles:
        def pick(name: str) -> Path | None:
            return directory / name if (directory / name).exists() else None

        return cls(pick("ca.crt"), pick("tls.crt"), pick("tls.key"), insecure)


def split_url(url: str) -> tuple[str, bool]:
    """`https://host:port/` -> ("host:port", True)."""
    secure = url.startswith(("https://", "grpcs://"))
    for scheme in ("grpcs://", "grpc://", "https://", "http://"):
        url = url.removeprefix(scheme)
    return url.rstrip("/"), secure


class TritonClient:
    """One connection to one Triton server, for one model."""

    def __init__(
        self,
        url: str,
        protocol: TritonProtocol,
        *,
        tls: TlsFiles | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.url = url
        self.protocol = protocol
        # gRPC refuses upper-case metadata keys; HTTP header names ignore case.
        self.headers = {k.lower(): v for k, v in (headers or {}).items()} or None
        self.timeout = timeout
        address, secure = split_url(url)
        secure = secure or tls is not None
        self._grpc = protocol == TritonProtocol.GRPC
        self._client: Any
        if self._grpc:
            self._client = grpc_aio.InferenceServerClient(
                address,
                ssl=secure,
                root_certificates=str(tls.ca) if tls and tls.ca else None,
                private_key=str(tls.key) if tls and tls.key else None,
                certificate_chain=str(tls.cert) if tls and tls.cert else None,
                channel_args=GRPC_CHANNEL_ARGS,
            )
            self._channel = _grpc_channel(address, tls if secure else None, secure=secure)
            self._model_infer = model_infer_method(self._channel)
            self._metadata = tuple((self.headers or {}).items()) or None
        else:
            import tritonclient.http.aio as http_aio  # noqa: PLC0415 (0.5 s of imports)

            context = _ssl_context(tls) if secure else None
            self._client = http_aio.InferenceServerClient(
                address, ssl=secure, ssl_context=context, conn_limit=1024
            )

    def describe(self) -> str:
        return f"Triton at {self.url} ({self.protocol.value})"

    async def close(self) -> None:
        await self._client.close()
        if self._grpc:
            await self._channel.close()

    async def wait_live(self, timeout: float) -> None:  # noqa: ASYNC109 (a deadline, not a cancel scope)
        """Wait for the server (a sidecar may still be starting); ModelNotReady on timeout."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            try:
                if await self._call(self._client.is_server_live(headers=self.headers)):
                    return
            except Exception as error:  # noqa: BLE001 (any failure here means "not yet")
                last = error
            if time.monotonic() >= deadline:
                detail = f": {classify(last)}" if last else ""
                raise ModelUnavailableError(
                    "ModelNotReady",
                    f"{self.describe()} is not reachable after {timeout:g}s{detail}",
                )
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    async def model_info(self, model: str, version: str | None) -> ModelInfo:
        """Metadata and config of a ready model; ModelUnavailableError names what is wrong."""
        version = version or ""
        where = f"model {model!r}" + (f" version {version}" if version else "")
        try:
            ready = await self._call(
                self._client.is_model_ready(model, version, headers=self.headers)
            )
        except Exception as error:  # noqa: BLE001 (classified below)
            raise ModelUnavailableError(
                "ModelNotReady", f"{where} on {self.describe()}: {classify(error)}"
            ) from None
        if not ready:
            known = await self._known_models()
            if model not in known:
                names = ", ".join(sorted(known)) or "none"
                raise ModelUnavailableError(
                    "ModelNotFound",
                    f"{where} is not in the model repository of {self.describe()} "
                    f"(models there: {names})",
                )
            raise ModelUnavailableError(
                "ModelNotReady", f"{where} on {self.describe()} is not ready"
            )
        try:
            metadata = await self._json("get_model_metadata", model, version)
            config = await self._json("get_model_config", model, version)
        except Exception as error:  # noqa: BLE001
            raise ModelUnavailableError(
                "ModelNotReady", f"{where} on {self.describe()}: {classify(error)}"
            ) from None
        return _model_info(model, metadata, config.get("config", config))

    async def _known_models(self) -> set[str]:
        try:
            index = await self._json("get_model_repository_index")
        except Exception:  # noqa: BLE001 (the index is only used to word the message)
            return set()
        entries = index.get("models", index) if isinstance(index, dict) else index
        return {str(entry.get("name")) for entry in entries or []}

    def encode(
        self,
        model: str,
        version: str | None,
        inputs: dict[str, tuple[NDArray[Any], str]],
        outputs: list[str],
    ) -> bytes | None:
        """The request ready to send (CPU work, for the reading thread); None over HTTP."""
        return encode_request(model, version, inputs, outputs) if self._grpc else None

    async def infer(
        self,
        model: str,
        version: str | None,
        inputs: dict[str, tuple[NDArray[Any], str]],
        outputs: list[str],
        encoded: bytes | None = None,
    ) -> dict[str, NDArray[Any]]:
        """One request; `inputs` maps tensor name to (array, Triton datatype). `encoded`, from
        `encode()` with the same arguments, saves building the request here."""
        try:
            if self._grpc:
                request = encoded or encode_request(model, version, inputs, outputs)
                response = await self._model_infer(
                    request, metadata=self._metadata, timeout=self.timeout
                )
                result = InferResult(response)
            else:
                result = await asyncio.wait_for(
                    self._http_infer(model, version, inputs, outputs), self.timeout
                )
        except Exception as error:  # noqa: BLE001 (every failure is classified)
            raise classify(error) from None
        arrays = {name: result.as_numpy(name) for name in outputs}
        missing = [name for name, array in arrays.items() if array is None]
        if missing:
            raise RequestError("INTERNAL", f"response lacks outputs {missing}", transient=False)
        return arrays

    async def _http_infer(
        self,
        model: str,
        version: str | None,
        inputs: dict[str, tuple[NDArray[Any], str]],
        outputs: list[str],
    ) -> Any:
        module: Any = sys.modules["tritonclient.http.aio"]
        request = []
        for name, (array, datatype) in inputs.items():
            tensor = module.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array, binary_data=True)
            request.append(tensor)
        wanted = [module.InferRequestedOutput(name, binary_data=True) for name in outputs]
        return await self._client.infer(
            model, request, model_version=version or "", outputs=wanted, headers=self.headers
        )

    async def _call(self, awaitable: Any) -> Any:
        return await asyncio.wait_for(awaitable, min(self.timeout, 30.0))

    async def _json(self, method: str, *args: str) -> Any:
        """A metadata call answered as JSON-like dicts by both protocols."""
        kwargs: dict[str, Any] = {"headers": self.headers}
        if self._grpc:
            kwargs["as_json"] = True
        return await self._call(getattr(self._client, method)(*args, **kwargs))


# Large batches exceed gRPC's 4 MiB default message size.
GRPC_CHANNEL_ARGS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
# ModelInferRequest field 7 (raw_input_contents: repeated bytes), wire type 2 (length-delimited).
_RAW_INPUT_TAG = bytes([7 << 3 | 2])


def model_infer_method(channel: grpc.aio.Channel) -> Any:
    """Triton's ModelInfer call taking the request's wire bytes (from `encode_request`)."""
    return channel.unary_unary(
        MODEL_INFER,
        request_serializer=None,  # bytes go out as they are
        response_deserializer=service_pb2.ModelInferResponse.FromString,
    )


def encode_request(
    model: str,
    version: str | None,
    inputs: dict[str, tuple[NDArray[Any], str]],
    outputs: list[str],
) -> bytes:
    """A ModelInferRequest's wire bytes, each input's bytes in raw_input_contents (as
    tritonclient sends them).

    Protobuf builds the small header; the tensors' bytes are appended as raw_input_contents
    fields (fields may come in any order on the wire), so they are copied once, not three
    times (tobytes, into the message, serialized)."""
    header = service_pb2.ModelInferRequest(model_name=model, model_version=version or "")
    parts: list[bytes | memoryview] = []
    for name, (array, datatype) in inputs.items():
        header.inputs.add(name=name, datatype=datatype, shape=array.shape)
        if datatype == "BYTES":
            serialized = serialize_byte_tensor(array)
            raw: bytes | memoryview = serialized.item() if serialized.size else b""
        else:
            raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8).data
        parts += [_RAW_INPUT_TAG, _varint(len(raw)), raw]
    for name in outputs:
        header.outputs.add(name=name)
    return b"".join([header.SerializeToString(), *parts])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _grpc_channel(address: str, tls: TlsFiles | None, *, secure: bool) -> grpc.aio.Channel:
    if not secure:
        return grpc.aio.insecure_channel(address, options=GRPC_CHANNEL_ARGS)

    def read(path: Path | None) -> bytes | None:
        return path.read_bytes() if path else None

    credentials = grpc.ssl_channel_credentials(
        read(tls.ca if tls else None),
        read(tls.key if tls else None),
        read(tls.cert if tls else None),
    )
    return grpc.aio.secure_channel(address, credentials, options=GRPC_CHANNEL_ARGS)


def _ssl_context(tls: TlsFiles | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls.ca) if tls and tls.ca else None)
    if tls and tls.cert and tls.key:
        context.load_cert_chain(str(tls.cert), str(tls.key))
    if tls and tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _dims(values: list[Any]) -> list[int]:
    return [int(v) for v in values]


def _model_info(model: str, metadata: dict[str, Any], config: dict[str, Any]) -> ModelInfo:
    max_batch = int(config.get("max_batch_size", 0) or 0)

    def tensors(entries: list[dict[str, Any]]) -> list[TensorMeta]:
        out = []
        for entry in entries:
            shape = _dims(entry.get("shape", []))
            out.append(
                TensorMeta(entry["name"], entry["datatype"], shape[1:] if max_batch else shape)
            )
        return out

    groups = config.get("instance_group") or [{}]
    instances = sum(int(g.get("count", 1) or 1) for g in groups)
    dynamic = config.get("dynamic_batching") or {}
    preferred = _dims(dynamic.get("preferred_batch_size", []))
    versions = metadata.get("versions") or [""]
    return ModelInfo(
        name=model,
        version=str(versions[-1]),
        inputs=tensors(metadata.get("inputs", [])),
        outputs=tensors(metadata.get("outputs", [])),
        max_batch_size=max_batch,
        instances=max(1, instances),
        preferred_batch_sizes=preferred,
    )
