"""`batchpredict-worker plan|shard|finalize`: the program every BatchPrediction pod runs.

Contract with the operator (it builds the Jobs from this):

Environment
  BATCHPREDICT_SPEC            the BatchPrediction spec as JSON (camelCase, as stored)
  BATCHPREDICT_NAME            the BatchPrediction's name; BATCHPREDICT_NAMESPACE its namespace
  BATCHPREDICT_RUN_UID         its UID (a plan from another run in output.uri is refused)
  BATCHPREDICT_ROUND           retry round, 0 first (finalize: the last round that ran)
  BATCHPREDICT_REDO            retryable (default) | all: a manual retry redoes every failure
  BATCHPREDICT_REDO_CODES      with REDO=all: only the failures of these codes (comma
                               separated); items never processed are always redone
  JOB_COMPLETION_INDEX         the shard (`shard` role; set by the Indexed Job)
  BATCHPREDICT_TRITON_URL      overrides spec.triton.url (sidecar: localhost:<grpcPort>; the
                               operator's default server when spec.triton is left out)
  BATCHPREDICT_REPORT          api | file | off (= none); api in a pod, else file
  BATCHPREDICT_REPORT_FILE     file mode: where (default <shard dir>/report.json)
  BATCHPREDICT_REPORT_INTERVAL seconds between report writes (default 5)
  BATCHPREDICT_TERMINATION_LOG default /dev/termination-log
  BATCHPREDICT_TLS_DIR         ca.crt/tls.crt/tls.key of spec.triton.tls.secretName
                               (default /var/run/batchpredict/tls)
  BATCHPREDICT_HEADERS_DIR     spec.triton.headersSecret mounted: one request header per file
                               (default /var/run/batchpredict/headers)
  BATCHPREDICT_TRITON_WAIT     seconds to wait for Triton to be live with the model ready
                               (default spec.stallTimeoutSeconds): a server that is down or
                               restarting is waited for with backoff, not a failure
  BATCHPREDICT_CHUNK_ITEMS     plan role: items per output chunk (default 10000)

Roles and exit codes (worker/exit_codes.py)
  plan      checks the dataset and the model, counts items, writes <output>/plan.json and the
            termination message {"total","shards","chunkItems","batchSize","concurrency",...}
  shard     processes shard JOB_COMPLETION_INDEX of round BATCHPREDICT_ROUND; round r>0 redoes
            the retryable failures (and never-committed items) of round r-1 of the same shard
            batch size: spec or the model's max_batch_size (bounded by 32 MiB of input);
            concurrency: spec, else tuned (doubled while throughput improves by 10%, max 64)
  finalize  BATCHPREDICT_ROUND = the last round that ran. Writes <output>/failures.jsonl (the
            final failure of every failed id; items of a shard that never finished are recorded
            as NOT_PROCESSED, retryable), <output>/manifest.json (counts, locations) and, with
            output.combine, <output>/predictions.<format>; with spec.evaluation also
            <output>/evaluation.json (batchpredict.evaluation); termination message
            {"total","succeeded","failed","notProcessed","predictions","evaluation"}
  evaluate  re-validates a finished run from its files (spec.evaluation edited after the
            end): writes <output>/evaluation.json; termination message {"evaluation"}
  0 = done (a shard's failed items are recorded, not fatal); 3 = cannot start (invalid spec,
  dataset missing, model missing, no plan, output not writable); 4 = broken part-way
  (retry the pod: it resumes); 5 = Triton stayed unreachable (or the model not ready) for
  BATCHPREDICT_TRITON_WAIT seconds. On 3, 4 and 5 the termination message is {"reason": ...,
  "message": ...}, reason one of InvalidSpec, DatasetNotFound, ModelNotFound, PlanNotFound,
  OutputNotWritable, TritonUnavailable, Crashed. On 0 a shard's termination message is its
  manifest (counts), which the operator reads when the shard's report did not arrive.

Output layout: see batchpredict.io.layout. Failure records (JSONL): {id, position, shard, round,
code, message, attempts, retryable}; codes are gRPC-style from Triton (INVALID_ARGUMENT,
UNAVAILABLE, ...) or the worker's own (MALFORMED_ITEM, UNREADABLE_ITEM, PREPROCESS_FAILED,
BAD_OUTPUT, NOT_PROCESSED; for DICOM also UNSUPPORTED_TRANSFER_SYNTAX, INCONSISTENT_SERIES,
INCOMPLETE_SERIES, DUPLICATE_INSTANCE). Only transient Triton errors (after
spec.retry.requestAttempts) and NOT_PROCESSED are retryable. Progress: one BatchPredictionShard
per (run, round, shard), created then merge-patched at most every BATCHPREDICT_REPORT_INTERVAL
seconds while counts change, and once more on exit (finished: true, or the message of what
broke).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchpredict.cpus import pod_cpus
from batchpredict.incluster import TERMINATION_LOG, in_pod
from batchpredict.worker import exit_codes
from batchpredict.worker.config import CannotStartError, WorkerEnv, load_env

log = logging.getLogger("batchpredict.worker")
ROLES = ("plan", "shard", "finalize", "evaluate")
# The kubelet keeps at most 4096 bytes of the termination message.
TERMINATION_LIMIT = 4000


def write_termination(path: Path, value: dict[str, Any]) -> None:
    text = json.dumps(value, separators=(",", ":"))
    if len(text) > TERMINATION_LIMIT and "message" in value:
        value = {**value, "message": str(value["message"])[: TERMINATION_LIMIT - 200] + "..."}
        text = json.dumps(value, separators=(",", ":"))
    try:
        path.write_text(text)
    except OSError as error:  # outside a pod there may be no /dev/termination-log
        log.debug("no termination message written to %s: %s", path, error)


def _role(name: str) -> Callable[[WorkerEnv], Coroutine[Any, Any, dict[str, Any]]]:
    if name == "plan":
        from batchpredict.worker.plan import run_plan  # noqa: PLC0415 (import what runs)

        return run_plan
    if name == "shard":
        from batchpredict.worker.shard import run_shard  # noqa: PLC0415

        return run_shard
    if name == "evaluate":
        from batchpredict.worker.evaluate import run_evaluate  # noqa: PLC0415

        return run_evaluate
    from batchpredict.worker.finalize import run_finalize  # noqa: PLC0415

    return run_finalize


def run(role: str, environ: dict[str, str] | None = None) -> int:
    """Run one role; returns the exit code."""
    source = os.environ if environ is None else environ
    termination = Path(
        source.get("BATCHPREDICT_TERMINATION_LOG") or in_pod(TERMINATION_LOG, source)
    )
    # Arrow's pool (it parses JSONL/CSV blocks) sized to the pod, not to the node.
    pa.set_cpu_count(pod_cpus())
    try:
        env = load_env(environ)
        result = asyncio.run(_role(role)(env))
    except CannotStartError as error:
        log.error("cannot start: %s: %s", error.reason, error)  # noqa: TRY400 (no traceback)
        write_termination(termination, {"reason": error.reason, "message": str(error)})
        return error.exit_code
    except Exception as error:
        log.exception("%s failed", role)
        write_termination(
            termination, {"reason": "Crashed", "message": f"{type(error).__name__}: {error}"}
        )
        return exit_codes.BROKEN
    log.info("%s done: %s", role, json.dumps(result, separators=(",", ":")))
    write_termination(termination, result)
    return exit_codes.OK


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    usage = f"usage: batchpredict-worker {{{'|'.join(ROLES)}}}\n"
    if args in (["--help"], ["-h"]):
        sys.stdout.write(usage)
        return exit_codes.OK
    if len(args) != 1 or args[0] not in ROLES:
        sys.stderr.write(usage)
        return exit_codes.USAGE
    return run(args[0])


if __name__ == "__main__":
    sys.exit(main())
