"""Container probes as the node agent runs them: exec, tcpSocket and httpGet on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any


async def probe_once(
    spec: dict[str, Any], env: dict[str, str], cwd: Path, probe: dict[str, Any]
) -> bool:
    """One exec, tcpSocket or httpGet probe of a container running on 127.0.0.1."""
    timeout = probe.get("timeoutSeconds", 1)
    port = _port(spec, (probe.get("tcpSocket") or probe.get("httpGet") or {}).get("port"))
    try:
        if "exec" in probe:
            proc = await asyncio.create_subprocess_exec(
                *probe["exec"]["command"],
                env=env,
                cwd=cwd,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                return await asyncio.wait_for(proc.wait(), timeout) == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        if "tcpSocket" in probe:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
            writer.close()
            return True
        if "httpGet" in probe:
            return await asyncio.wait_for(_http_probe(port, probe["httpGet"]), timeout)
    except (OSError, TimeoutError):
        return False
    return True


async def _http_probe(port: int, spec: dict[str, Any]) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {spec.get('path', '/')} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
    line = await reader.readline()
    writer.close()
    parts = line.split()
    return len(parts) > 1 and parts[1].isdigit() and 200 <= int(parts[1]) < 400


def _port(spec: dict[str, Any], port: int | str | None) -> int:
    if isinstance(port, str) and not port.isdigit():
        for p in spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        with contextlib.suppress(OSError):
            return socket.getservbyname(port)
    return int(port or 0)
