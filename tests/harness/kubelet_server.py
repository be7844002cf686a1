"""The node agent's kubelet endpoint: container logs for `kubectl logs` (through the API server).

The API server calls `GET https://<node InternalIP>:<kubeletEndpoint port>/containerLogs/
<namespace>/<pod>/<container>` with its kubelet client certificate; this serves the log file of
the container's current run (`previous=true`: the run before), honouring `tailLines`,
`limitBytes` and `follow`.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from tests.harness.node_agent import NodeAgent


def _read(path: Path, tail: int | None, limit: int | None) -> bytes:
    data = path.read_bytes()
    if tail is not None:
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[-tail:]) if tail > 0 else b""
    return data[:limit] if limit is not None else data


async def start(agent: NodeAgent) -> web.AppRunner:
    async def container_logs(request: web.Request) -> web.StreamResponse:
        ns, pod, name = (request.match_info[k] for k in ("ns", "pod", "container"))
        runner = next((r for r in agent.runners.values() if (r.ns, r.name) == (ns, pod)), None)
        container = runner.container(name) if runner else None
        if runner is None or container is None:
            raise web.HTTPNotFound(text=f"container {name!r} of pod {ns}/{pod} not found")
        query = request.query
        restarts = container.restarts - (1 if query.get("previous") == "true" else 0)
        path = container.directory / f"{restarts}.log"
        if restarts < 0 or not path.exists():
            raise web.HTTPBadRequest(text=f"no logs for container {name!r} in pod {ns}/{pod}")
        tail = int(query["tailLines"]) if "tailLines" in query else None
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        data = await asyncio.to_thread(_read, path, tail, limit)
        if query.get("follow") != "true":
            return web.Response(body=data, content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(data)
        offset = path.stat().st_size
        while True:
            size = path.stat().st_size
            if size > offset:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    await response.write(handle.read(size - offset))
                offset = size
            elif container.restarts != restarts or not container.running:
                break
            await asyncio.sleep(0.2)
        return response

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/containerLogs/{ns}/{pod}/{container}", container_logs)
    app.router.add_get("/healthz", healthz)
    context = ssl.create_default_context(
        ssl.Purpose.CLIENT_AUTH, cafile=agent.config["clientCaFile"]
    )
    context.load_cert_chain(agent.config["servingCert"], agent.config["servingKey"])
    context.verify_mode = ssl.CERT_REQUIRED
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", agent.config["kubeletPort"], ssl_context=context)
    await site.start()
    return runner
