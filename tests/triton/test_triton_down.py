"""Triton down is a state, not a failure: a shard started while its server is down waits,
says so in its report, and carries on when the server is back; a model the server does not
have fails at once."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from batchpredict.worker import exit_codes
from batchpredict.worker.main import run
from tests.harness.triton_server import TritonHandle, own_triton
from tests.triton.support import WORKER, assert_each_id_once, termination, worker_env

pytestmark = pytest.mark.triton


def test_a_shard_waits_for_triton_and_carries_on_when_it_is_back(tmp_path: Path) -> None:
    rows = "".join(json.dumps({"x": float(i)}) + "\n" for i in range(60))
    (tmp_path / "in.jsonl").write_text(rows)
    out = tmp_path / "out"
    with own_triton(tmp_path / "triton", "double") as triton:
        spec = {
            "model": {"name": "double"},
            "triton": {"url": triton.grpc_url},
            "input": {"uri": str(tmp_path / "in.jsonl"), "format": "jsonl"},
            "output": {"uri": str(out)},
            "shards": 1,
        }
        env = worker_env(spec, tmp_path, BATCHPREDICT_TRITON_WAIT="120")
        assert run("plan", env) == 0, termination(tmp_path)
        triton.stop()
        shard = subprocess.Popen(
            [WORKER, "shard"], env={**env, "JOB_COMPLETION_INDEX": "0"}, stderr=subprocess.PIPE
        )
        report_path = out / "rounds/000/shard-00000/report.json"

        def waiting() -> bool:
            if not report_path.exists():
                return False
            progress = json.loads(report_path.read_text())["progress"]
            return progress.get("waitingReason") == "TritonUnavailable"

        deadline = time.monotonic() + 30
        while not waiting() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert waiting(), "the report says the pod waits for Triton"
        message = json.loads(report_path.read_text())["progress"]["message"]
        assert triton.grpc_url in message
        assert shard.poll() is None, "the pod waits instead of failing"
        triton.start()
        _, stderr = shard.communicate(timeout=90)
    assert shard.returncode == 0, stderr.decode()[-2000:]
    final = json.loads(report_path.read_text())["progress"]
    assert final["finished"] and final["succeeded"] == 60
    assert "waitingReason" not in final
    assert run("finalize", env) == 0, termination(tmp_path)
    assert_each_id_once(out, {str(i) for i in range(60)})


def test_a_model_the_server_does_not_have_fails_at_once(
    triton_server: TritonHandle, tmp_path: Path
) -> None:
    (tmp_path / "in.jsonl").write_text('{"x": 1.0}\n')
    spec = {
        "model": {"name": "no-such-model"},
        "triton": {"url": triton_server.grpc_url},
        "input": {"uri": str(tmp_path / "in.jsonl"), "format": "jsonl"},
        "output": {"uri": str(tmp_path / "out")},
    }
    started = time.monotonic()
    code = run("plan", worker_env(spec, tmp_path, BATCHPREDICT_TRITON_WAIT="120"))
    assert code == exit_codes.CANNOT_START
    assert termination(tmp_path)["reason"] == "ModelNotFound"
    assert time.monotonic() - started < 30, "no waiting for a model that does not exist"
