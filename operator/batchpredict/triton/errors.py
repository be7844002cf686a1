"""Classify Triton client errors: transient (retry the request) or permanent (the items)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from tritonclient.utils import InferenceServerException

# gRPC codes worth retrying, and their HTTP equivalents (DESIGN.md section 5).
_TRANSIENT = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED"}
_HTTP_CODES = {
    "400": "INVALID_ARGUMENT",
    "404": "NOT_FOUND",
    "408": "DEADLINE_EXCEEDED",
    "429": "RESOURCE_EXHAUSTED",
    "499": "CANCELLED",
    "500": "INTERNAL",
    "502": "UNAVAILABLE",
    "503": "UNAVAILABLE",
    "504": "DEADLINE_EXCEEDED",
}


@dataclass(frozen=True)
class RequestError(Exception):
    """A failed request, with a gRPC-style code and whether trying again may help."""

    code: str
    message: str
    transient: bool

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def classify(error: BaseException) -> RequestError:
    """Map an exception raised by a tritonclient call to a RequestError."""
    if isinstance(error, RequestError):
        return error
    if isinstance(error, InferenceServerException):
        status = str(error.status() or "")
        code = _HTTP_CODES.get(status, status.removeprefix("StatusCode.") or "UNKNOWN")
        message = str(error.message() or error)
        # A model being (re)loaded answers "unknown model"/"not ready" for a moment.
        transient = code in _TRANSIENT
        return RequestError(code, message, transient)
    if isinstance(error, grpc.aio.AioRpcError):  # the raw stub the worker infers through
        code = error.code().name
        return RequestError(code, str(error.details() or code), code in _TRANSIENT)
    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        return RequestError("DEADLINE_EXCEEDED", "request timed out", transient=True)
    if isinstance(error, ConnectionError | OSError) or _is_aiohttp_error(error):
        return RequestError("UNAVAILABLE", f"connection failed: {error}", transient=True)
    return RequestError("INTERNAL", f"{type(error).__name__}: {error}", transient=False)


def _is_aiohttp_error(error: BaseException) -> bool:
    # aiohttp is only imported when the HTTP protocol is used.
    module = type(error).__module__
    return module.startswith("aiohttp") and isinstance(error, Exception)
