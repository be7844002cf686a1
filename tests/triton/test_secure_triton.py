"""The worker against a tritonserver that wants mutual TLS and an auth header on inference.

The Secrets the operator mounts (spec.triton.tls.secretName, spec.triton.headersSecret) are
files here: BATCHPREDICT_TLS_DIR and BATCHPREDICT_HEADERS_DIR point at them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchpredict.worker import exit_codes
from tests.harness.pki import Pki, generate_pki
from tests.harness.triton_server import TritonHandle, start_triton, write_model_repository
from tests.triton.support import predictions, run_all, run_cli, termination, worker_env

pytestmark = pytest.mark.triton

# Triton's --grpc-restricted-protocol=inference:<key>=<value> checks the header
# `triton-grpc-protocol-<key>`: that is the key the headersSecret needs.
HEADER = "Triton-Grpc-Protocol-X-Api-Key"  # any case: gRPC wants lower case, the worker sends it
TOKEN = "s3cret"  # noqa: S105 (the test server's token)
ITEMS = 500


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return generate_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_triton(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TritonHandle]:
    repo = write_model_repository(tmp_path_factory.mktemp("secure-models"), ["double"])
    handle = start_triton(
        repo,
        extra_args=[
            "--grpc-use-ssl-mutual=true",
            f"--grpc-server-cert={pki.serving_cert}",
            f"--grpc-server-key={pki.serving_key}",
            f"--grpc-root-cert={pki.ca_cert}",
            f"--grpc-restricted-protocol=inference:x-api-key={TOKEN}",
        ],
    )
    yield handle
    handle.stop()


def secrets(tmp: Path, pki: Pki, *, client_cert: bool, header: str | None) -> dict[str, str]:
    """The mounted Secrets as files, and the environment that points the worker at them."""
    tls, headers = tmp / "tls", tmp / "headers"
    tls.mkdir()
    headers.mkdir()
    shutil.copy(pki.ca_cert, tls / "ca.crt")
    if client_cert:
        shutil.copy(pki.kubelet_client_cert, tls / "tls.crt")
        shutil.copy(pki.kubelet_client_key, tls / "tls.key")
    if header is not None:
        (headers / HEADER).write_text(header + "\n")
    return {"BATCHPREDICT_TLS_DIR": str(tls), "BATCHPREDICT_HEADERS_DIR": str(headers)}


def spec(triton: TritonHandle, tmp: Path) -> dict[str, Any]:
    data = tmp / "in.parquet"
    pq.write_table(pa.table({"x": [float(i) for i in range(ITEMS)]}), data)
    return {
        "model": {"name": "double"},
        "triton": {
            "url": f"grpcs://localhost:{triton.grpc_port}",
            "tls": {"secretName": "triton-tls"},
            "headersSecret": "triton-token",
        },
        "input": {"uri": str(data), "format": "parquet"},
        "output": {"uri": str(tmp / "out")},
        "retry": {"requestAttempts": 1},
    }


def test_mutual_tls_and_an_auth_header_reach_a_locked_down_triton(
    secure_triton: TritonHandle, pki: Pki, tmp_path: Path
) -> None:
    env = secrets(tmp_path, pki, client_cert=True, header=TOKEN)
    summary = run_all(spec(secure_triton, tmp_path), tmp_path, **env)

    assert (summary["succeeded"], summary["failed"]) == (ITEMS, 0)
    assert {r["id"]: r["y"] for r in predictions(tmp_path / "out")} == {
        str(i): 2.0 * i for i in range(ITEMS)
    }


def test_a_missing_auth_header_fails_the_items_with_triton_s_reason(
    secure_triton: TritonHandle, pki: Pki, tmp_path: Path
) -> None:
    env = secrets(tmp_path, pki, client_cert=True, header=None)
    summary = run_all(spec(secure_triton, tmp_path), tmp_path, **env)

    assert (summary["succeeded"], summary["failed"]) == (0, ITEMS)
    failures = (tmp_path / "out" / "failures.jsonl").read_text()
    assert "expecting header 'triton-grpc-protocol-x-api-key'" in failures


def test_without_a_client_certificate_the_worker_gives_up_and_names_the_server(
    secure_triton: TritonHandle, pki: Pki, tmp_path: Path
) -> None:
    """A refused handshake looks like a server that is down (gRPC says UNAVAILABLE): the pod
    waits for it as long as it may, then says which server it could not reach."""
    env = secrets(tmp_path, pki, client_cert=False, header=TOKEN)
    result = run_cli("plan", worker_env(spec(secure_triton, tmp_path), tmp_path, **env))

    assert result.returncode == exit_codes.UNAVAILABLE, result.stderr
    message = termination(tmp_path)
    assert message["reason"] == "TritonUnavailable"
    assert f"grpcs://localhost:{secure_triton.grpc_port}" in message["message"]
