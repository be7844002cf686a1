"""A stand-in worker for benchmarks/operator_scale.py: the operator's load without Triton.

plan: answers with the totals in the termination message, as the real plan step does;
shard: sleeps (the benchmark writes the shard reports itself, timed); finalize: exits.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

role = sys.argv[1]
spec = json.loads(os.environ["BATCHPREDICT_SPEC"])
root = os.environ.get("BATCHPREDICT_CONTAINER_ROOT", "")
termination = Path(root + os.environ.get("BATCHPREDICT_TERMINATION_LOG", "/dev/termination-log"))
if role == "plan":
    shards = int(spec.get("shards", 1))
    termination.write_text(json.dumps({"total": 10 * shards, "shards": shards}))
elif role == "shard":
    time.sleep(float(os.environ.get("BENCH_SHARD_SECONDS", "120")))
