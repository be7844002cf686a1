"""Node pools: the named places to run workers that the platform team defines (Helm values
`nodePools`, the operator's config). A run names one with `spec.worker.nodePool`; a name the
operator does not know is refused with the list, never silently ignored (the run would land on
CPU nodes without its GPU, or never schedule)."""

from __future__ import annotations

from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.controller.config import NodePool, OperatorConfig

REASON_UNKNOWN_NODE_POOL = "UnknownNodePool"


def node_pool(spec: BatchPredictionSpec, config: OperatorConfig) -> NodePool | None:
    """The pool the run picked, if it picked a known one."""
    name = spec.worker.node_pool
    return config.node_pools.get(name) if name else None


def unknown_node_pool(spec: BatchPredictionSpec, config: OperatorConfig) -> str | None:
    """What to tell the user when spec.worker.nodePool names no pool of this operator; None
    when it names a known pool or none."""
    name = spec.worker.node_pool
    if name is None or name in config.node_pools:
        return None
    known = ", ".join(sorted(config.node_pools)) or "none are defined"
    where = "the operator's Helm values `nodePools`"
    if config.node_pools_config_map:
        where += f"; listed in ConfigMap {config.node_pools_config_map}"
    return (
        f"spec.worker.nodePool: {name!r} is not a node pool of this operator "
        f"(known pools: {known}; they come from {where})"
    )
