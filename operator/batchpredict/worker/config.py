"""The worker's configuration, read from the environment the operator sets (see main.py)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from batchpredict.api.v1alpha1.serving import HEADERS_NEED_TLS, TritonProtocol
from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.api.validation import InvalidSpecError, parse_spec
from batchpredict.incluster import TERMINATION_LOG, TRITON_HEADERS_DIR, TRITON_TLS_DIR, in_pod
from batchpredict.triton.client import TlsFiles, TritonClient
from batchpredict.worker import exit_codes
from batchpredict.worker.rounds import ManualRedo

REPORT_MODES = frozenset({"api", "file", "off", "none"})


class CannotStartError(Exception):
    """The role cannot run at all (exit code CANNOT_START); `reason` is machine-readable."""

    exit_code = exit_codes.CANNOT_START

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class TritonUnavailableError(CannotStartError):
    """Triton stayed unreachable (or the model not ready) for as long as the pod may wait."""

    exit_code = exit_codes.UNAVAILABLE

    def __init__(self, message: str) -> None:
        super().__init__(exit_codes.REASON_TRITON_UNAVAILABLE, message)


@dataclass(frozen=True)
class WorkerEnv:
    spec: BatchPredictionSpec
    name: str
    namespace: str
    run_uid: str
    round: int
    manual_redo: ManualRedo | None  # a manual retry round: which final failures it redoes
    shard: int | None
    triton_url: str | None
    report_mode: str
    report_file: str | None
    report_interval: float
    termination_log: Path
    tls_dir: Path
    headers_dir: Path
    triton_wait: float
    chunk_items: int | None


def _manual_redo(env: dict[str, str]) -> ManualRedo | None:
    """BATCHPREDICT_REDO=all marks a manual retry round; BATCHPREDICT_REDO_CODES (comma
    separated) narrows it to those failure codes."""
    if env.get("BATCHPREDICT_REDO", "retryable") != "all":
        return None
    codes = [c for c in env.get("BATCHPREDICT_REDO_CODES", "").split(",") if c]
    return ManualRedo(frozenset(codes) if codes else None)


def _int(env: dict[str, str], key: str, default: int | None) -> int | None:
    value = env.get(key)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise CannotStartError(
            exit_codes.REASON_INVALID_SPEC, f"{key} must be an integer (got {value!r})"
        ) from None


def load_env(env: dict[str, str] | None = None) -> WorkerEnv:
    env = dict(os.environ if env is None else env)
    raw = env.get("BATCHPREDICT_SPEC")
    if not raw:
        raise CannotStartError(exit_codes.REASON_INVALID_SPEC, "BATCHPREDICT_SPEC is not set")
    try:
        spec = parse_spec(json.loads(raw))
    except json.JSONDecodeError as error:
        raise CannotStartError(
            exit_codes.REASON_INVALID_SPEC, f"BATCHPREDICT_SPEC is not JSON: {error}"
        ) from None
    except InvalidSpecError as error:
        raise CannotStartError(exit_codes.REASON_INVALID_SPEC, str(error)) from None
    inside_pod = "KUBERNETES_SERVICE_HOST" in env
    report_mode = env.get("BATCHPREDICT_REPORT", "api" if inside_pod else "file")
    if report_mode not in REPORT_MODES:
        raise CannotStartError(
            exit_codes.REASON_INVALID_SPEC,
            f"BATCHPREDICT_REPORT must be one of {sorted(REPORT_MODES)} (got {report_mode!r})",
        )
    return WorkerEnv(
        spec=spec,
        name=env.get("BATCHPREDICT_NAME", "batchprediction"),
        namespace=env.get("BATCHPREDICT_NAMESPACE", "default"),
        run_uid=env.get("BATCHPREDICT_RUN_UID", ""),
        round=_int(env, "BATCHPREDICT_ROUND", 0) or 0,
        manual_redo=_manual_redo(env),
        shard=_int(env, "JOB_COMPLETION_INDEX", None),
        triton_url=env.get("BATCHPREDICT_TRITON_URL") or None,
        report_mode=report_mode,
        report_file=env.get("BATCHPREDICT_REPORT_FILE") or None,
        report_interval=float(env.get("BATCHPREDICT_REPORT_INTERVAL", "5")),
        termination_log=_pod_path(env, "BATCHPREDICT_TERMINATION_LOG", TERMINATION_LOG),
        tls_dir=_pod_path(env, "BATCHPREDICT_TLS_DIR", TRITON_TLS_DIR),
        headers_dir=_pod_path(env, "BATCHPREDICT_HEADERS_DIR", TRITON_HEADERS_DIR),
        # Triton down is a state the pod waits out, up to the run's stall timeout.
        triton_wait=float(env.get("BATCHPREDICT_TRITON_WAIT") or spec.stall_timeout_seconds),
        chunk_items=_int(env, "BATCHPREDICT_CHUNK_ITEMS", None),
    )


def make_client(env: WorkerEnv) -> TritonClient:
    """The Triton client the spec asks for; the env URL wins (sidecar, operator default)."""
    triton = env.spec.triton
    url = env.triton_url or (triton.url if triton else None)
    if not url:
        raise CannotStartError(
            exit_codes.REASON_INVALID_SPEC,
            "spec.triton: no Triton URL (set spec.triton.url, or the operator sets "
            "BATCHPREDICT_TRITON_URL for sidecars and its default server)",
        )
    if env.triton_url or triton is None:
        scheme_http = url.startswith(("http://", "https://"))
        protocol = TritonProtocol.HTTP if scheme_http else TritonProtocol.GRPC
    else:
        protocol = triton.resolved_protocol()
    tls = None
    if (triton and triton.tls is not None) or url.startswith(("https://", "grpcs://")):
        insecure = bool(triton and triton.tls and triton.tls.insecure_skip_verify)
        tls = TlsFiles.from_dir(env.tls_dir, insecure)
    headers = {}
    if env.headers_dir.is_dir():
        # The headersSecret mounted as files: one header per key (values never logged).
        headers = {
            p.name: p.read_text().strip()
            for p in sorted(env.headers_dir.iterdir())
            if p.is_file() and not p.name.startswith(".")
        }
    clear_text_allowed = triton is not None and (
        triton.allow_headers_without_tls or triton.sidecar is not None
    )
    if headers and tls is None and not clear_text_allowed:
        # Auth headers never travel in clear text unless the run says so by name.
        raise CannotStartError(exit_codes.REASON_INVALID_SPEC, HEADERS_NEED_TLS)
    timeout = triton.timeout_seconds if triton else 60.0
    return TritonClient(url, protocol, tls=tls, headers=headers, timeout=timeout)


def _pod_path(env: dict[str, str], name: str, default: str) -> Path:
    """An explicit path from the environment, else the pod path `default`."""
    return Path(env[name]) if env.get(name) else in_pod(default, env)
