"""Operator at scale: N concurrent BatchPredictions against the local control plane.

    .venv/bin/python benchmarks/operator_scale.py [--runs 100] [--shards 4]

The data plane is trivial on purpose: the operator runs `benchmarks/trivial_worker.py` (plan
answers with the totals, shards sleep, finalize exits), and this script plays the workers'
part of writing BatchPredictionShard reports, so it knows when each report was written.
Prints, for the operator under load:
  - apply -> plan Job and apply -> round-0 Job created (p50/p95)
  - status lag behind the reports: report written -> status.items.succeeded shows it (p95)
  - API writes per BatchPrediction per minute (status patches + Jobs created + Events)
  - operator peak RSS
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config, watch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.conftest import OperatorProcess, free_port, installed_crds  # noqa: E402
from tests.harness.cluster import LocalCluster, cache_bin_dir  # noqa: E402
from tests.harness.fixtures import Cluster  # noqa: E402

from batchpredict.api.v1alpha1 import GROUP, PLURAL, VERSION  # noqa: E402
from batchpredict.api.v1alpha1.report import REPORT_PLURAL, report_name  # noqa: E402

VENV_BIN = Path(sys.executable).parent
SUCCEEDED_IN_REPORT = 7
# Every write the operator makes to the API server is counted by one of these.
WRITE_COUNTERS = (
    "batchpredict_status_patches_total",
    "batchpredict_jobs_created_total",
    "batchpredict_events_total",
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def spread(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.2f} s, p95 {percentile(values, 0.95):.2f} s"


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def bp_manifest(name: str, shards: int) -> dict[str, Any]:
    return {
        "apiVersion": "batchpredict.io/v1alpha1",
        "kind": "BatchPrediction",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "double"},
            "triton": {"url": "localhost:1"},
            "input": {"uri": "/dev/null", "format": "jsonl"},
            "output": {"uri": "/nonexistent/bench-out"},  # the trivial worker writes nothing
            "parallelism": shards,
            "shards": shards,
        },
    }


def report_manifest(bp: dict[str, Any], shard: int) -> dict[str, Any]:
    meta = bp["metadata"]
    return {
        "apiVersion": "batchpredict.io/v1alpha1",
        "kind": "BatchPredictionShard",
        "metadata": {
            "name": report_name(meta["name"], meta["uid"], 0, shard),
            "namespace": meta["namespace"],
            # The operator counts a report only through its owner reference to the run.
            "ownerReferences": [
                {
                    "apiVersion": "batchpredict.io/v1alpha1",
                    "kind": "BatchPrediction",
                    "name": meta["name"],
                    "uid": meta["uid"],
                }
            ],
        },
        "spec": {
            "batchPrediction": meta["name"],
            "runUid": meta["uid"],
            "round": 0,
            "shard": shard,
        },
        "progress": {"itemsTotal": 10, "succeeded": SUCCEEDED_IN_REPORT, "itemsPerSecond": 5.0},
    }


async def write_reports_and_watch(
    kubeconfig: Path, bps: list[dict[str, Any]], shards: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Write each run's shard reports (as its workers would, one run every 50 ms) and watch
    the runs: (when each run's reports were written, when its status showed them)."""
    await config.load_kube_config(config_file=str(kubeconfig))
    written: dict[str, float] = {}
    seen: dict[str, float] = {}
    async with client.ApiClient() as api:
        custom = client.CustomObjectsApi(api)

        async def watch_runs() -> None:
            stream = watch.Watch().stream(
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                "bench",
                PLURAL,
                timeout_seconds=300,
            )
            async for event in stream:
                bp = event["object"]
                name = bp["metadata"]["name"]
                items = (bp.get("status") or {}).get("items") or {}
                done = items.get("succeeded") == SUCCEEDED_IN_REPORT * shards
                if done and name in written and name not in seen:
                    seen[name] = time.time()
                if len(seen) == len(bps):
                    return

        watcher = asyncio.create_task(watch_runs())
        await asyncio.sleep(1)  # the watch is open before the first report
        for bp in bps:
            for shard in range(shards):
                report = report_manifest(bp, shard)
                await custom.create_namespaced_custom_object(
                    GROUP, VERSION, "bench", REPORT_PLURAL, report
                )
            written[bp["metadata"]["name"]] = time.time()
            await asyncio.sleep(0.05)
        await asyncio.wait_for(watcher, 300)
    return written, seen


def operator_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--shards", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    local = LocalCluster(work / "cluster")
    kubeconfig = local.up()
    cluster = Cluster(kubeconfig, str(cache_bin_dir() / "kubectl"), local.state_dir)
    try:
        run(cluster, work, args.runs, args.shards)
    finally:
        local.down(purge=True)


def run(cluster: Cluster, work: Path, runs: int, shards: int) -> None:
    installed_crds.__wrapped__(cluster)  # CRDs served, worker ClusterRole: as the tests do
    cluster.kubectl("create", "namespace", "bench")
    config = {
        "workerCommand": [str(VENV_BIN / "python"), str(REPO / "benchmarks" / "trivial_worker.py")],
        "metricsPort": free_port(),
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    operator = OperatorProcess(
        cluster, work / "config.yaml", work / "operator.log", config["metricsPort"]
    )
    operator.start()
    assert operator.process is not None
    started = time.time()
    manifests = [bp_manifest(f"bench-{i:03d}", shards) for i in range(runs)]
    cluster.apply(yaml.safe_dump_all(manifests), "bench")

    bps = wait_for(cluster, lambda items: all(_phase(b) == "Running" for b in items), 600)
    jobs = cluster.get("jobs", namespace="bench")["items"]
    created = {b["metadata"]["name"]: parse_time(b["metadata"]["creationTimestamp"]) for b in bps}
    plan_lat, job_lat = [], []
    for job in jobs:
        owner = job["metadata"]["ownerReferences"][0]["name"]
        latency = parse_time(job["metadata"]["creationTimestamp"]) - created[owner]
        (plan_lat if job["metadata"]["name"].endswith("-plan") else job_lat).append(latency)

    written, seen = asyncio.run(write_reports_and_watch(cluster.kubeconfig, bps, shards))
    lags = [seen[n] - written[n] for n in seen]

    minutes = (time.time() - started) / 60
    metrics = operator.metrics()
    writes = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith(
            (
                "batchpredict_status_patches_total",
                "batchpredict_jobs_created_total",
                "batchpredict_events_total",
            )
        )
    )
    rss = operator_rss_kib(operator.process.pid)
    operator.stop()
    print(f"runs: {runs}, shards per run: {shards}, duration: {minutes * 60:.0f} s")
    print(f"apply -> plan Job created: {spread(plan_lat)}")
    print(f"apply -> round-0 Job created: {spread(job_lat)}")
    print(f"status lag behind reports: {spread(lags)} ({len(lags)}/{runs} runs seen)")
    print(f"API writes per BatchPrediction per minute: {writes / runs / minutes:.1f}")
    print(f"operator peak RSS: {rss / 1024:.0f} MiB")


def _phase(bp: dict[str, Any]) -> str | None:
    return (bp.get("status") or {}).get("phase")


def wait_for(cluster: Cluster, done: Any, timeout: float) -> list[dict[str, Any]]:
    deadline = time.time() + timeout
    items: list[dict[str, Any]] = []
    while time.time() < deadline:
        items = cluster.get("bp", namespace="bench")["items"]
        if items and done(items):
            return items
        time.sleep(1)
    phases = [_phase(b) for b in items]
    raise SystemExit(f"runs did not all reach Running in {timeout} s: {phases}")


if __name__ == "__main__":
    main()
