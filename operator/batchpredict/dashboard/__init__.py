"""The web dashboard (DESIGN.md section 10): the runs table with live progress, run pages,
results, and the actions behind buttons. `serve()` runs it; `kubectl batchpredict dashboard`
and the `batchpredict-dashboard` console script call it.

    batchpredict-dashboard                    # every namespace you can see, opens the browser
    batchpredict-dashboard -n team-a --port 8080 --no-browser
    batchpredict-dashboard --read-only --host 0.0.0.0   # the chart's in-cluster mode
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import webbrowser

from batchpredict import incluster

DEFAULT_PORT = 8765
DESCRIPTION = """The batchpredict web dashboard: runs with live progress, run pages (conditions,
shards, failures, Events, logs, results), and retry/suspend/resume/cancel with your own
kubeconfig. Serves on 127.0.0.1 and opens the browser.

examples:
  batchpredict-dashboard                    # every namespace you can see
  batchpredict-dashboard -n team-a --port 8080 --no-browser
  batchpredict-dashboard --read-only --host 0.0.0.0   # the chart's in-cluster mode
"""
log = logging.getLogger(__name__)


def _fallback_namespace() -> str:
    """Where to look when listing every namespace is forbidden: the pod's namespace in the
    cluster, else the kubeconfig context's."""
    if incluster.in_cluster():
        path = incluster.in_pod(f"{incluster.SERVICE_ACCOUNT_DIR}/namespace")
        return path.read_text().strip() if path.is_file() else "default"
    from kubernetes_asyncio import config  # noqa: PLC0415

    try:
        _, active = config.list_kube_config_contexts()
        return str(((active or {}).get("context") or {}).get("namespace") or "default")
    except Exception:  # noqa: BLE001 - no readable context: Kubernetes' own default
        return "default"


async def _serve(
    namespace: str | None, read_only: bool, host: str, port: int, open_browser: bool
) -> None:
    from aiohttp import web  # noqa: PLC0415

    from batchpredict.dashboard.feed import RunFeed  # noqa: PLC0415
    from batchpredict.dashboard.kube import Kube  # noqa: PLC0415
    from batchpredict.dashboard.server import LOOPBACK_NAMES, build_app  # noqa: PLC0415

    kube = Kube(await incluster.api_client())
    feed = RunFeed(kube, namespace, _fallback_namespace())
    # On loopback, only loopback names: a site rebound to 127.0.0.1 is refused (DNS rebinding).
    hosts = LOOPBACK_NAMES if host in LOOPBACK_NAMES else frozenset()
    runner = web.AppRunner(build_app(kube, feed, read_only, hosts), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    shown = "127.0.0.1" if host in {"0.0.0.0", "::"} else host  # noqa: S104
    url = f"http://{shown}:{bound}/"
    mode = "read-only" if read_only else "acting as you (your kubeconfig)"
    # The line a user (and the tests) read to find the address: it is the program's output.
    print(f"batchpredict dashboard on {url} ({mode}); Ctrl-C stops it", flush=True)
    if open_browser:
        await asyncio.to_thread(webbrowser.open, url)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def serve(
    namespace: str | None = None,
    *,
    read_only: bool = False,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    open_browser: bool = True,
) -> None:
    """Serve the dashboard until interrupted. `namespace` None: every namespace the
    credentials can list (else the context's namespace). `port` 0 picks a free one."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(namespace, read_only, host, port, open_browser))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The dashboard's options, for its own script and for `kubectl batchpredict dashboard`."""
    parser.add_argument("-n", "--namespace", help="only this namespace (default: all you can see)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--read-only", action="store_true", help="refuse every action")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")


def main(argv: list[str] | None = None, prog: str = "batchpredict-dashboard") -> None:
    """The console script; `kubectl batchpredict dashboard ARGS` calls
    `main(ARGS, prog="kubectl batchpredict dashboard")` (or, with its own argparse
    subcommand, `add_arguments(subparser)` then `serve_args(args)`)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    serve_args(args)


def serve_args(args: argparse.Namespace) -> None:
    serve(
        args.namespace,
        read_only=args.read_only,
        host=args.host,
        port=args.port,
        open_browser=not args.no_browser,
    )
