"""`batchpredict node-pools`: the node pools `spec.worker.nodePool` may name, read with the
user's own kubeconfig from the ConfigMap the chart renders (`<release>-node-pools` in the
operator's namespace; every authenticated user may get it)."""

from __future__ import annotations

import asyncio
from typing import Any

import yaml

DEFAULT_NAMESPACE = "batchpredict-system"
DEFAULT_NAME = "batchpredict-node-pools"
POOLS_KEY = "pools.yaml"


async def _read(
    namespace: str, name: str, kubeconfig: str | None, context: str | None
) -> dict[str, Any]:
    from kubernetes_asyncio import client, config  # noqa: PLC0415 (only this verb needs it)

    await config.load_kube_config(config_file=kubeconfig, context=context)
    async with client.ApiClient() as api:
        found = await client.CoreV1Api(api).read_namespaced_config_map(name, namespace)
    pools = yaml.safe_load((found.data or {}).get(POOLS_KEY) or "{}")
    return pools if isinstance(pools, dict) else {}


def read_pools(
    namespace: str, name: str, kubeconfig: str | None = None, context: str | None = None
) -> dict[str, Any]:
    """The pools as the chart wrote them: {name: {description, nodeSelector, ...}}."""
    return asyncio.run(_read(namespace, name, kubeconfig, context))


def _gpus(pool: dict[str, Any]) -> str:
    resources = pool.get("resources") or {}
    for kind in ("limits", "requests"):
        for key, value in (resources.get(kind) or {}).items():
            if key.endswith("/gpu"):
                return f"{value} {key}"
    return "-"


def format_pools(pools: dict[str, Any]) -> str:
    """A table a user reads: NAME, GPU, NODE SELECTOR, DESCRIPTION."""
    if not pools:
        return "no node pools are defined (Helm value nodePools): leave spec.worker.nodePool out\n"
    rows = [("NAME", "GPU", "NODE SELECTOR", "DESCRIPTION")]
    for name in sorted(pools):
        pool = pools[name] or {}
        selector = ",".join(f"{k}={v}" for k, v in (pool.get("nodeSelector") or {}).items())
        rows.append((name, _gpus(pool), selector or "-", pool.get("description") or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + f"   {row[3]}".rstrip()
        + "\n"
        for row in rows
    )
