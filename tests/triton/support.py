"""Run worker roles as the operator would, and read back what a user would see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from batchpredict.worker.main import run

WORKER = str(Path(sys.executable).parent / "batchpredict-worker")


def worker_env(spec: dict[str, Any], tmp: Path, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("BATCHPREDICT_")},
        "BATCHPREDICT_SPEC": json.dumps(spec),
        "BATCHPREDICT_NAME": "test-run",
        "BATCHPREDICT_NAMESPACE": "default",
        "BATCHPREDICT_RUN_UID": "uid-1",
        "BATCHPREDICT_TERMINATION_LOG": str(tmp / "termination-log"),
        "BATCHPREDICT_REPORT": "file",
        "BATCHPREDICT_REPORT_INTERVAL": "0.2",
        "BATCHPREDICT_TRITON_WAIT": "5",
        **extra,
    }


def termination(tmp: Path) -> dict[str, Any]:
    return dict(json.loads((tmp / "termination-log").read_text()))


def run_all(spec: dict[str, Any], tmp: Path, rounds: int = 1, **extra: str) -> dict[str, Any]:
    """plan, every shard of every round, finalize (in-process); returns the summary manifest."""
    env = worker_env(spec, tmp, **extra)
    assert run("plan", env) == 0, termination(tmp)
    plan = termination(tmp)
    for round_ in range(rounds):
        for shard in range(plan["shards"]):
            shard_env = {
                **env,
                "JOB_COMPLETION_INDEX": str(shard),
                "BATCHPREDICT_ROUND": str(round_),
            }
            assert run("shard", shard_env) == 0, termination(tmp)
    assert run("finalize", {**env, "BATCHPREDICT_ROUND": str(rounds - 1)}) == 0, termination(tmp)
    return dict(json.loads((Path(spec["output"]["uri"]) / "manifest.json").read_text()))


def run_cli(
    role: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WORKER, role], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def predictions(out: Path) -> list[dict[str, Any]]:
    """Every prediction row in every committed chunk of every round."""
    rows: list[dict[str, Any]] = []
    for path in sorted(out.glob("rounds/*/shard-*/predictions-*")):
        if path.suffix == ".parquet":
            rows += pq.read_table(path).to_pylist()
        else:
            rows += [json.loads(line) for line in path.read_text().splitlines() if line]
    return rows


def final_failures(out: Path) -> list[dict[str, Any]]:
    text = (out / "failures.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def assert_each_id_once(out: Path, expected_ids: set[str]) -> None:
    """The invariant: every input id is in predictions or failures, exactly once."""
    seen = Counter(r["id"] for r in predictions(out))
    seen.update(f["id"] for f in final_failures(out))
    duplicates = {k: v for k, v in seen.items() if v > 1}
    assert not duplicates, f"ids recorded more than once: {dict(list(duplicates.items())[:10])}"
    missing, unexpected = expected_ids - set(seen), set(seen) - expected_ids
    assert not missing, f"ids in neither predictions nor failures: {sorted(missing)[:10]}"
    assert not unexpected, f"ids that are not in the input: {sorted(unexpected)[:10]}"
