"""`predict --port-forward svc/NAME[:PORT]`: reach a Triton Service from the user's machine
through `kubectl port-forward` (the user's kubectl, kubeconfig and rights)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import AsyncIterator

from batchpredict.console.kube import ConsoleError, Target

FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+)")
DEFAULT_PORT = "8001"  # Triton's gRPC port
START_SECONDS = 30.0


def forward_args(target: Target, resource: str) -> list[str]:
    """kubectl's arguments: a free local port to `resource`'s port (8001 when not named)."""
    name, sep, port = resource.rpartition(":")
    if not sep or not port.isdigit():
        name, port = resource, DEFAULT_PORT
    args = []
    if target.kubeconfig:
        args += ["--kubeconfig", target.kubeconfig]
    if target.context:
        args += ["--context", target.context]
    if target.namespace:
        args += ["-n", target.namespace]
    return [*args, "port-forward", name, f":{port}"]


@contextlib.asynccontextmanager
async def port_forward(target: Target, resource: str) -> AsyncIterator[str]:
    """`localhost:PORT` forwarded to `resource` while the block runs."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ConsoleError("--port-forward needs kubectl on PATH")
    process = await asyncio.create_subprocess_exec(
        kubectl,
        *forward_args(target, resource),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        local = await _local_port(process)
        if local is None:
            await process.wait()
            error = (await process.stderr.read()).decode(errors="replace") if process.stderr else ""
            reason = error.strip().splitlines()[-1] if error.strip() else "kubectl exited"
            raise ConsoleError(f"cannot port-forward to {resource}: {reason}")
        yield f"localhost:{local}"
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def _local_port(process: asyncio.subprocess.Process) -> str | None:
    """The local port kubectl chose, from its first line; None when it stopped first."""
    if process.stdout is None:
        return None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), START_SECONDS)
    except TimeoutError:
        return None
    match = FORWARDING.search(line.decode(errors="replace"))
    return match.group(1) if match else None
