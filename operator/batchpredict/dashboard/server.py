"""The dashboard's HTTP server (aiohttp): the pages and their assets from package data, a JSON
API over the user's cluster, and one server-sent event stream fed by a watch (feed.py).

Local mode acts with the user's kubeconfig; `read_only` (the chart's in-cluster mode) refuses
every action with a message and the pages disable their buttons. Actions need a header that a
page of another site cannot send without CORS (which this server never grants), so a web page
open in the same browser cannot act through the dashboard; and on loopback only a loopback
Host is served, so a site whose name is rebound to 127.0.0.1 cannot read it either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from batchpredict import actions
from batchpredict.dashboard import outputs
from batchpredict.dashboard.feed import RunFeed
from batchpredict.dashboard.kube import Kube, KubeError
from batchpredict.dashboard.views import run_detail, template

log = logging.getLogger(__name__)
ACTION_HEADER = "X-Batchpredict-Action"
READ_ONLY_MESSAGE = (
    "This dashboard is read-only (deployed in the cluster with view rights only). "
    "Act on runs with `kubectl batchpredict dashboard` on your workstation, or kubectl."
)
HEARTBEAT_SECONDS = 15.0
STATIC = resources.files("batchpredict.dashboard") / "static"
CONTENT_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# Every asset comes from this server: the browser refuses anything else (no CDN, offline).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KUBE: web.AppKey[Kube] = web.AppKey("kube", Kube)
FEED: web.AppKey[RunFeed] = web.AppKey("feed", RunFeed)
READ_ONLY: web.AppKey[bool] = web.AppKey("read_only", bool)
HOSTS: web.AppKey[frozenset[str]] = web.AppKey("hosts", frozenset)
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; actions only from the dashboard's own pages; the API
    server's refusals passed on with its message."""
    hosts = request.app[HOSTS]
    if hosts and _host_name(request.host) not in hosts:
        return _error(403, f"this dashboard answers only to {', '.join(sorted(hosts))}")
    if request.method not in {"GET", "HEAD"}:
        if request.headers.get(ACTION_HEADER) != "1":
            return _error(403, f"actions need the {ACTION_HEADER} header (send from the page)")
        if request.app[READ_ONLY]:
            return _error(403, READ_ONLY_MESSAGE)
    try:
        response = await handler(request)
    except KubeError as error:
        response = _error(error.status, error.message)
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


def _host_name(host: str) -> str:
    """The name in a Host header, without its port."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


# --- pages and assets -------------------------------------------------------------------
def _asset(name: str) -> web.Response:
    resource = STATIC / name
    suffix = "." + name.rsplit(".", 1)[-1]
    if "/" in name or name.startswith(".") or suffix not in CONTENT_TYPES or not resource.is_file():
        raise web.HTTPNotFound
    return web.Response(
        body=resource.read_bytes(),
        content_type=CONTENT_TYPES[suffix],
        charset="utf-8" if suffix in {".html", ".css", ".js", ".svg"} else None,
        headers={"Cache-Control": "no-cache"},
    )


async def runs_page(_: web.Request) -> web.Response:
    return _asset("index.html")


async def run_page(_: web.Request) -> web.Response:
    return _asset("run.html")


async def asset(request: web.Request) -> web.Response:
    return _asset(request.match_info["file"])


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def config(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    return web.json_response(
        {
            "readOnly": request.app[READ_ONLY],
            "namespace": feed.namespace,
            "message": READ_ONLY_MESSAGE,
        }
    )


# --- the runs table ----------------------------------------------------------------------
async def runs(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(feed.ready.wait(), 10)
    return web.json_response({"runs": feed.snapshot(), "error": feed.error})


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a snapshot, then every change (`?namespace=&name=`: one run's)."""
    feed = request.app[FEED]
    only = (request.query.get("namespace"), request.query.get("name"))
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    for key, value in SECURITY_HEADERS.items():
        response.headers[key] = value
    await response.prepare(request)
    queue = feed.subscribe()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(feed.ready.wait(), 10)
        first = (
            {"type": "error", "message": feed.error}
            if feed.error
            else {"type": "snapshot", "runs": feed.snapshot()}
        )
        await _send(response, _only(first, only))
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            filtered = _only(message, only)
            if filtered is not None:
                await _send(response, filtered)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.unsubscribe(queue)
    return response


def _only(message: dict[str, Any], only: tuple[str | None, str | None]) -> dict[str, Any] | None:
    namespace, name = only
    if not name:
        return message
    if message["type"] == "snapshot":
        rows = [r for r in message["runs"] if (r["namespace"], r["name"]) == (namespace, name)]
        return {"type": "snapshot", "runs": rows}
    run = message.get("run")
    if run is not None and (run["namespace"], run["name"]) != (namespace, name):
        return None
    return message


async def _send(response: web.StreamResponse, message: dict[str, Any] | None) -> None:
    if message is not None:
        await response.write(f"data: {json.dumps(message)}\n\n".encode())


# --- one run -----------------------------------------------------------------------------
def _output_uri(bp: dict[str, Any]) -> str:
    return str(((bp.get("spec") or {}).get("output") or {}).get("uri") or "")


async def _run(request: web.Request) -> tuple[str, str, dict[str, Any]]:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    return namespace, name, await request.app[KUBE].get_run(namespace, name)


async def run(request: web.Request) -> web.Response:
    kube = request.app[KUBE]
    namespace, name, bp = await _run(request)
    uid = str(bp["metadata"]["uid"])
    children, events = await asyncio.gather(
        kube.children(namespace, uid), kube.events(namespace, name, uid)
    )
    evaluation = None
    with contextlib.suppress(Exception):  # outputs this process cannot read: none shown
        evaluation = await asyncio.to_thread(outputs.summary_file, _output_uri(bp), "evaluation")
    detail = run_detail(bp, events=events, evaluation=evaluation, **children)
    return web.json_response(detail)


async def results(request: web.Request) -> web.Response:
    _, _, bp = await _run(request)
    offset = max(0, int(request.query.get("offset", "0")))
    limit = int(request.query.get("limit", "20"))
    try:
        page = await asyncio.to_thread(outputs.results_page, _output_uri(bp), offset, limit)
    except Exception as error:  # noqa: BLE001 - storage errors vary by backend (botocore, gcsfs...)
        return _error(502, f"cannot read the outputs at {_output_uri(bp)}: {error}")
    return web.json_response(page)


async def download(request: web.Request) -> web.StreamResponse:
    namespace, name, bp = await _run(request)
    what, uri = request.match_info["what"], _output_uri(bp)
    if what in {"manifest", "evaluation"}:
        found = await asyncio.to_thread(outputs.summary_file, uri, what)
        if found is None:
            return _error(404, f"{name} has no {what} yet")
        return web.json_response(
            found,
            headers={"Content-Disposition": f'attachment; filename="{name}-{what}.json"'},
        )
    if what not in {"predictions", "failures"}:
        raise web.HTTPNotFound
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson",
            "Content-Disposition": f'attachment; filename="{namespace}-{name}-{what}.jsonl"',
        }
    )
    await response.prepare(request)
    lines = await asyncio.to_thread(lambda: iter(outputs.download_lines(uri, what)))
    while True:
        chunk = await asyncio.to_thread(_next_chunk, lines)
        if not chunk:
            break
        await response.write(chunk)
    await response.write_eof()
    return response


def _next_chunk(lines: Any, size: int = 1 << 16) -> bytes:
    """Up to `size` bytes of lines (read in a thread: storage is blocking I/O)."""
    parts, total = [], 0
    for line in lines:
        parts.append(line)
        total += len(line)
        if total >= size:
            break
    return b"".join(parts)


async def thumbnail(request: web.Request) -> web.Response:
    _, _, bp = await _run(request)
    input_uri = str(((bp.get("spec") or {}).get("input") or {}).get("uri") or "")
    try:
        png = await asyncio.to_thread(outputs.thumbnail, input_uri, request.query.get("id", ""))
    except (ValueError, FileNotFoundError) as error:
        return _error(404, str(error))
    except Exception as error:  # noqa: BLE001 - storage errors vary by backend
        return _error(502, f"cannot read {request.query.get('id', '')}: {error}")
    return web.Response(body=png, content_type="image/png")


async def pod_log(request: web.Request) -> web.Response:
    kube = request.app[KUBE]
    namespace, name, bp = await _run(request)
    pod = await kube.get_pod(namespace, request.match_info["pod"])
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if labels.get("batchpredict.io/run") != bp["metadata"]["uid"]:
        return _error(404, f"pod {request.match_info['pod']} is not one of {name}'s")
    text = await kube.pod_log(namespace, request.match_info["pod"], request.query.get("container"))
    return web.Response(text=text, content_type="text/plain")


async def copy_template(request: web.Request) -> web.Response:
    _, _, bp = await _run(request)
    return web.Response(
        text=yaml.safe_dump(template(bp), sort_keys=False), content_type="text/plain"
    )


# --- actions (local mode) ------------------------------------------------------------------
ACTIONS = {
    "retry": actions.retry_patch,
    "suspend": lambda: actions.suspend_patch(True),
    "resume": lambda: actions.suspend_patch(False),
    "cancel": actions.cancel_patch,
}


async def act(request: web.Request) -> web.Response:
    namespace, name, action = (request.match_info[k] for k in ("namespace", "name", "action"))
    if action not in ACTIONS:
        raise web.HTTPNotFound
    await request.app[KUBE].patch_run(namespace, name, ACTIONS[action]())
    log.info("dashboard: %s %s/%s", action, namespace, name)
    return web.json_response({"ok": True, "message": f"{action} sent to {name}"})


async def create(request: web.Request) -> web.Response:
    """Create a BatchPrediction from YAML, or with `?dryRun=true` have the API server check it
    as it would create it; refusals carry the API server's message."""
    namespace = request.match_info["namespace"]
    dry_run = request.query.get("dryRun") == "true"
    try:
        body = yaml.safe_load(await request.text())
    except yaml.YAMLError as error:
        return _error(400, f"not YAML: {error}")
    if not isinstance(body, dict):
        return _error(400, "a BatchPrediction is a YAML mapping (apiVersion, kind, metadata, spec)")
    (body.setdefault("metadata", {}) or {}).pop("namespace", None)
    await request.app[KUBE].create_run(namespace, body, dry_run)
    name = (body.get("metadata") or {}).get("name", "")
    verb = "would be created (dry run passed)" if dry_run else "created"
    return web.json_response({"ok": True, "name": name, "message": f"{name} {verb}"})


# --- the application -------------------------------------------------------------------------
def build_app(
    kube: Kube, feed: RunFeed, read_only: bool, hosts: frozenset[str] = frozenset()
) -> web.Application:
    """`hosts`: the Host names served (empty: any, for a Service or an ingress)."""
    app = web.Application(middlewares=[guard])
    app[KUBE], app[FEED], app[READ_ONLY], app[HOSTS] = kube, feed, read_only, hosts
    run_path = "/api/runs/{namespace}/{name}"
    app.add_routes(
        [
            web.get("/", runs_page),
            web.get("/runs/{namespace}/{name}", run_page),
            web.get("/static/{file}", asset),
            web.get("/healthz", healthz),
            web.get("/api/config", config),
            web.get("/api/runs", runs),
            web.get("/api/stream", stream),
            web.get(run_path, run),
            web.get(run_path + "/results", results),
            web.get(run_path + "/download/{what}", download),
            web.get(run_path + "/thumbnail", thumbnail),
            web.get(run_path + "/logs/{pod}", pod_log),
            web.get(run_path + "/template", copy_template),
            web.post(run_path + "/actions/{action}", act),
            web.post("/api/runs/{namespace}", create),
        ]
    )

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        feed.start()
        yield
        await feed.stop()
        await kube.api.close()

    app.cleanup_ctx.append(lifecycle)
    return app
