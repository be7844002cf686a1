"""The evaluate role: re-validate a finished run from its output files, without predicting.

Reads the manifest, predictions and final failures under spec.output.uri (RunOutputs), the
labels that spec.evaluation names, writes evaluation.json beside the manifest (replacing the
previous one) and leaves the summary for status.evaluation in its termination message."""

from __future__ import annotations

import asyncio
from typing import Any

from batchpredict.evaluation.evaluate import evaluate_or_explain
from batchpredict.worker import exit_codes
from batchpredict.worker.config import CannotStartError, WorkerEnv
from batchpredict.worker.setup import open_layout


def _evaluate(env: WorkerEnv) -> dict[str, Any]:
    if env.spec.evaluation is None:
        raise CannotStartError(
            exit_codes.REASON_INVALID_SPEC, "spec.evaluation is not set: nothing to evaluate"
        )
    layout = open_layout(env)
    return {"evaluation": evaluate_or_explain(layout.uri, env.spec.evaluation)}


async def run_evaluate(env: WorkerEnv) -> dict[str, Any]:
    return await asyncio.to_thread(_evaluate, env)
