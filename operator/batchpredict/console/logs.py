"""`logs NAME [--shard N] [--round R] [--role plan|shard|finalize] [-f]`: the run's pods'
logs, each line prefixed with the step it comes from."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console

from batchpredict.console.kube import ConsoleError, Kube
from batchpredict.console.runs import COMPLETION_INDEX
from batchpredict.reconcile.naming import LABEL_ROLE, LABEL_ROUND, Role
from batchpredict.reconcile.pods import WORKER_CONTAINER

ROLES = {"plan": Role.PLAN, "shard": Role.SHARDS, "finalize": Role.FINALIZE}


def pod_label(pod: dict[str, Any]) -> str:
    meta = pod["metadata"]
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    role, round_ = labels.get(LABEL_ROLE, "?"), labels.get(LABEL_ROUND, "0")
    if role == Role.SHARDS.value:
        return f"r{round_}/shard-{annotations.get(COMPLETION_INDEX, '?')}"
    return f"r{round_}/{role}"


def select_pods(
    pods: list[dict[str, Any]], shard: int | None, role: str | None
) -> list[dict[str, Any]]:
    chosen = []
    for pod in pods:
        annotations = pod["metadata"].get("annotations") or {}
        if shard is not None and annotations.get(COMPLETION_INDEX) != str(shard):
            continue
        if shard is not None and role is None:
            labels = pod["metadata"].get("labels") or {}
            if labels.get(LABEL_ROLE) != Role.SHARDS.value:
                continue
        chosen.append(pod)
    return sorted(chosen, key=lambda p: str(p["metadata"].get("creationTimestamp", "")))


async def logs_command(
    kube: Kube,
    console: Console,
    name: str,
    *,
    shard: int | None,
    round_: int | None,
    role: str | None,
    follow: bool,
) -> int:
    bp = await kube.get_run(name)
    selector = []
    if role is not None:
        selector.append(f"{LABEL_ROLE}={ROLES[role].value}")
    if round_ is not None:
        selector.append(f"{LABEL_ROUND}={round_}")
    pods = select_pods(await kube.pods(bp, ",".join(selector)), shard, role)
    if not pods:
        raise ConsoleError(f"{bp['metadata']['name']}: no pod matches (they may be gone)")

    def emit(pod: dict[str, Any], line: str) -> None:
        console.out(f"[{pod_label(pod)}] {line}", highlight=False)

    if not follow:
        for pod in pods:
            text = await kube.log(pod["metadata"]["name"], WORKER_CONTAINER)
            for line in text.splitlines():
                emit(pod, line)
        return 0

    async def stream(pod: dict[str, Any]) -> None:
        async for line in kube.follow_log(pod["metadata"]["name"], WORKER_CONTAINER):
            emit(pod, line)

    await asyncio.gather(*(stream(p) for p in pods))
    return 0
