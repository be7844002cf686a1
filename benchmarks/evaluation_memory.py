"""Peak RSS and time of the finalize step with an evaluation, at 100,000 and 1,000,000 items.

    .venv/bin/python benchmarks/evaluation_memory.py [--sizes 100000 1000000]

For each size it lays out a finished run's committed chunks as the shard workers write them
(10,000 items per chunk, 1 in 1,000 items failed), then runs `batchpredict-worker finalize`
in a fresh process three times: without evaluation, with labels in the items (a binary
score; AUCs from the score table) and with a separate CSV labels dataset joined by id
(multi-class, sliced by a field). Prints seconds and the process's peak RSS (wait4), so the
memory an evaluation adds can be read at 10x the items.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from batchpredict.io.layout import OutputLayout

VENV_BIN = Path(sys.executable).parent
CHUNK = 10_000
ITEMS_PER_SHARD = 100_000
RUN_UID = "bench-run"


def lay_out(root: Path, total: int) -> Path:
    """A run's plan and committed chunks; returns the labels CSV beside it."""
    rng = random.Random(1)
    output = root / "out"
    output.mkdir()
    layout = OutputLayout(str(output))
    shards = max(1, total // ITEMS_PER_SHARD)
    plan = {"total": total, "shards": shards, "chunkItems": CHUNK, "runUid": RUN_UID}
    (output / "plan.json").write_text(json.dumps(plan))
    labels = root / "labels.csv"
    with labels.open("w") as label_file:
        label_file.write("item,cls,site\n")
        per_shard = total // shards
        for shard in range(shards):
            for chunk in range(per_shard // CHUNK):
                first = shard * per_shard + chunk * CHUNK
                rows, failures = [], []
                for n in range(first, first + CHUNK):
                    y = rng.random() < 0.3
                    cls = n % 10
                    label_file.write(f"item-{n},{cls if rng.random() < 0.9 else 0},s{n % 7}\n")
                    if n % 1000 == 0:
                        failures.append(
                            {
                                "id": f"item-{n}",
                                "position": n,
                                "shard": shard,
                                "round": 0,
                                "code": "INVALID_ARGUMENT",
                                "message": "rejected",
                                "attempts": 1,
                                "retryable": False,
                            }
                        )
                        continue
                    score = min(1.0, max(0.0, rng.gauss(0.35 + 0.3 * y, 0.2)))
                    rows.append({"id": f"item-{n}", "label": int(y), "score": score, "cls": cls})
                predictions = Path(layout.predictions_chunk(0, shard, chunk, "jsonl"))
                predictions.parent.mkdir(parents=True, exist_ok=True)
                if failures:
                    Path(layout.failures_chunk(0, shard, chunk)).write_text(
                        "".join(json.dumps(f) + "\n" for f in failures)
                    )
                predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return labels


def finalize(
    output: Path, evaluation: dict[str, Any] | None
) -> tuple[float, float, dict[str, Any]]:
    """(seconds, peak RSS in MiB, termination message) of one finalize process."""
    for stale in ("manifest.json", "failures.jsonl", "evaluation.json"):
        (output / stale).unlink(missing_ok=True)
    spec: dict[str, Any] = {
        "model": {"name": "m"},
        "input": {"uri": str(output / "plan.json"), "format": "jsonl"},
        "output": {"uri": str(output)},
    }
    if evaluation is not None:
        spec["evaluation"] = evaluation
    termination = output.parent / "termination.json"
    env = {
        **os.environ,
        "BATCHPREDICT_SPEC": json.dumps(spec),
        "BATCHPREDICT_RUN_UID": RUN_UID,
        "BATCHPREDICT_TERMINATION_LOG": str(termination),
        "BATCHPREDICT_REPORT": "off",
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(VENV_BIN / "batchpredict-worker"), "finalize"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(
            f"finalize failed: {process.stderr.read().decode() if process.stderr else ''}"
        )
    return seconds, usage.ru_maxrss / 1024, json.loads(termination.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=["none", "binary", "joined"],
        default=["none", "binary", "joined"],
    )
    args = parser.parse_args()
    print(f"{'items':>10}  {'evaluation':<34} {'seconds':>8} {'peak RSS':>10}  headline")
    for total in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
            labels = lay_out(Path(tmp), total)
            output = Path(tmp) / "out"
            cases: list[tuple[str, str, dict[str, Any] | None]] = [
                ("none", "none (finalize alone)", None),
                (
                    "binary",
                    "binary, labels in the items",
                    {"task": "binary", "prediction": "score"},
                ),
                (
                    "joined",
                    "classification, labels file joined",
                    {
                        "task": "classification",
                        "prediction": "cls",
                        "sliceBy": ["site"],
                        "labels": {
                            "field": "cls",
                            "dataset": {"uri": str(labels), "format": "csv", "idField": "item"},
                        },
                    },
                ),
            ]
            for case, what, evaluation in cases:
                if case not in args.cases:
                    continue
                seconds, rss, result = finalize(output, evaluation)
                summary = result.get("evaluation") or {}
                headline = summary.get("summary") or summary.get("message") or ""
                print(f"{total:>10,}  {what:<34} {seconds:>8.1f} {rss:>7.0f} MiB  {headline}")


if __name__ == "__main__":
    main()
