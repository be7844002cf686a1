"""`kubectl batchpredict <verb>` (also `batchpredict <verb>`): the user's console for runs,
results and a single prediction. It acts with the user's own kubeconfig, context and storage
credentials. Errors are one line on stderr and a non-zero exit code; `watch` and `status` exit
with the run's outcome (0 Succeeded, 2 PartiallySucceeded, 1 Failed/Cancelled, 124 timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console

from batchpredict.console import control, inspect, logs, outputs, pools, version, watch
from batchpredict.console.kube import ConsoleError, Kube, Target, connect
from batchpredict.console.portforward import port_forward
from batchpredict.console.predict import DEFAULT_WAIT
from batchpredict.dashboard import add_arguments as add_dashboard_arguments
from batchpredict.dashboard import serve_args as serve_dashboard

FORMATS = ("wide", "json", "yaml", "name")
PIPE_WIDTH = 1000


def _prog() -> str:
    plugin = Path(sys.argv[0]).name.startswith("kubectl-")
    return "kubectl batchpredict" if plugin else "batchpredict"


def _common() -> argparse.ArgumentParser:
    """The options kubectl users expect on every verb."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("cluster")
    group.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    group.add_argument("--kubeconfig", help="default: $KUBECONFIG, else ~/.kube/config")
    group.add_argument("--context", help="kubeconfig context")
    group.add_argument("--no-color", action="store_true", help="plain text")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog=_prog(), description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, text: str) -> argparse.ArgumentParser:
        return verbs.add_parser(name, help=text, description=text, parents=[common])

    p = verb("submit", "create a run from YAML and print how to follow it")
    p.add_argument("-f", "--filename", type=Path, required=True)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--watch", action="store_true", help="then follow it (like `watch`)")
    how.add_argument("--wait", action="store_true", help="then wait for it (like `status`)")
    p.add_argument("--timeout", type=float)

    p = verb("list", "the runs: progress, times, status")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-o", "--output", choices=FORMATS)
    p.add_argument("--no-headers", action="store_true")
    p.add_argument("--phase")
    p.add_argument("--model")
    p.add_argument("--user", help="started by")

    p = verb("get", "a run: header, rounds and shards, failures by code")
    p.add_argument("name", help="NAME or @latest")
    p.add_argument("-o", "--output", choices=FORMATS)

    for name, text in (
        ("watch", "follow a run live; exit with its outcome"),
        ("status", "wait for a run without drawing; exit with its outcome"),
    ):
        p = verb(name, text)
        p.add_argument("name")
        p.add_argument("--timeout", type=float, help="seconds (exit code 124 past it)")

    _output_verbs(verb)
    _action_verbs(verb)
    verb("version", "plugin, operator and CRD versions")
    p = verb("validate", "check BatchPrediction YAML files")
    p.add_argument("files", nargs="+", type=Path)
    verb("crds", "print the CRDs as YAML")
    p = verb("node-pools", "the node pools spec.worker.nodePool may name")
    p.add_argument(
        "--name",
        default=pools.DEFAULT_NAME,
        help="the ConfigMap (the chart's <release>-node-pools)",
    )
    p.epilog = f"-n: the operator's namespace (default {pools.DEFAULT_NAMESPACE})"
    dashboard = verbs.add_parser(
        "dashboard",
        help="the web dashboard on localhost, with your kubeconfig",
        description="Serve the dashboard on localhost with your own kubeconfig ($KUBECONFIG) "
        "and open it in the browser.",
    )
    add_dashboard_arguments(dashboard)
    return parser


Verb = Callable[[str, str], argparse.ArgumentParser]


def _output_verbs(verb: Verb) -> None:
    p = verb("results", "predictions with their input fields, from the run's output")
    p.add_argument("name")
    p.add_argument("--limit", type=int)
    p.add_argument("-o", "--output", choices=("table", "jsonl", "csv"), default="table")
    p.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--download", type=Path, metavar="DIR", help="copy the output files there")

    p = verb("failures", "the failure records: id, code, message, attempts")
    p.add_argument("name")
    p.add_argument("--code", action="append", default=[])
    p.add_argument("--limit", type=int)
    p.add_argument("-o", "--output", choices=("table", "jsonl", "csv"), default="table")

    p = verb("logs", "the run's pods' logs")
    p.add_argument("name")
    p.add_argument("--shard", type=int)
    p.add_argument("--round", type=int)
    p.add_argument("--role", choices=sorted(logs.ROLES))
    p.add_argument("-f", "--follow", action="store_true")


def _action_verbs(verb: Verb) -> None:
    p = verb("retry", "redo a finished run's failed items in a new round")
    p.add_argument("name")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--code", action="append", default=[], help="only this code (repeatable)")
    which.add_argument("--all", action="store_true", help="every failure (the default)")
    for name, text in (
        ("suspend", "pause a run (pods stop, progress is kept)"),
        ("resume", "resume a suspended run"),
        ("cancel", "stop a run for good; what is done is kept"),
    ):
        verb(name, text).add_argument("name")

    p = verb("predict", "items through a spec's exact path, answered at once")
    p.add_argument("-f", "--filename", type=Path, required=True, help="the run's YAML")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--item", type=Path, help="a file (spec.input.format: files)")
    source.add_argument("--row", help="the item's fields as JSON")
    source.add_argument("--from-dataset", type=int, metavar="N", help="the spec's first N items")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="Triton URL reachable from here (default: spec.triton.url)")
    where.add_argument(
        "--port-forward",
        metavar="svc/NAME[:PORT]",
        help="reach Triton through `kubectl port-forward` (port 8001 unless named)",
    )
    p.add_argument("--wait", type=float, default=DEFAULT_WAIT, help="seconds to wait for Triton")
    p.add_argument("-o", "--output", choices=("json", "jsonl"), default="json")


def _target(args: argparse.Namespace) -> Target:
    return Target(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        all_namespaces=bool(getattr(args, "all_namespaces", False)),
    )


async def _with_kube(args: argparse.Namespace, body: Callable[[Kube], Awaitable[int]]) -> int:
    async with connect(_target(args)) as kube:
        return await body(kube)


async def _submit(kube: Kube, args: argparse.Namespace, out: Console) -> int:
    code = 0
    for body in control.read_runs(args.filename):
        created = await control.submit(kube, body)
        name, namespace = created["metadata"]["name"], created["metadata"]["namespace"]
        out.out(f"batchprediction.batchpredict.io/{name} created", highlight=False)
        out.out(f"follow it: {_prog()} watch {name} -n {namespace}", highlight=False)
        if args.watch or args.wait:
            kube.namespace = namespace
            code = max(
                code,
                await watch.follow(
                    kube,
                    out,
                    name,
                    limit=args.timeout,
                    draw=args.watch and out.is_terminal,
                    quiet=args.wait,
                ),
            )
    return code


async def _predict(args: argparse.Namespace, out: Console) -> int:
    from batchpredict.api.validation import parse_batch_prediction  # noqa: PLC0415
    from batchpredict.console.predict import predict  # noqa: PLC0415 (the worker's modules)

    body = control.read_runs(args.filename)[0]
    spec = parse_batch_prediction(body).spec
    async with contextlib.AsyncExitStack() as stack:
        url = args.url
        if args.port_forward:
            url = await stack.enter_async_context(port_forward(_target(args), args.port_forward))
            if spec.triton and spec.triton.url and spec.triton.url.startswith("http"):
                url = f"http://{url}"
        result = await predict(
            spec,
            item=args.item,
            row=args.row,
            first=args.from_dataset,
            triton_url=url,
            wait=args.wait,
        )
    if args.output == "jsonl":
        for row in result.predictions + result.failures:
            out.out(json.dumps(row, separators=(",", ":")), highlight=False)
    else:
        document = {
            "predictions": result.predictions,
            "failures": result.failures,
            "timings": result.timings,
        }
        out.out(json.dumps(document, indent=2, default=str), highlight=False)
    return 1 if result.failures and not result.predictions else 0


async def dispatch(args: argparse.Namespace, out: Console) -> int:  # noqa: PLR0911 (one per verb)
    verb = args.verb
    if verb == "predict":
        return await _predict(args, out)
    if verb == "submit":
        return await _with_kube(args, lambda k: _submit(k, args, out))
    if verb == "list":
        return await _with_kube(
            args,
            lambda k: inspect.list_command(
                k,
                out,
                all_namespaces=args.all_namespaces,
                output=args.output or "",
                headers=not args.no_headers,
                phase=args.phase,
                model=args.model,
                user=args.user,
            ),
        )
    if verb == "get":
        return await _with_kube(
            args, lambda k: inspect.get_command(k, out, args.name, output=args.output or "")
        )
    if verb in {"watch", "status"}:
        draw = verb == "watch" and out.is_terminal
        return await _with_kube(
            args,
            lambda k: watch.follow(
                k, out, args.name, limit=args.timeout, draw=draw, quiet=verb == "status"
            ),
        )
    if verb == "results":
        return await _with_kube(
            args,
            lambda k: outputs.results_command(
                k,
                out,
                args.name,
                limit=args.limit,
                output=args.output,
                where=args.where,
                download=args.download,
            ),
        )
    if verb == "failures":
        return await _with_kube(
            args,
            lambda k: outputs.failures_command(
                k, out, args.name, codes=args.code, limit=args.limit, output=args.output
            ),
        )
    if verb == "logs":
        return await _with_kube(
            args,
            lambda k: logs.logs_command(
                k,
                out,
                args.name,
                shard=args.shard,
                round_=args.round,
                role=args.role,
                follow=args.follow,
            ),
        )
    return await _with_kube(args, lambda k: _act(k, args, out))


async def _act(kube: Kube, args: argparse.Namespace, out: Console) -> int:
    verb = args.verb
    if verb == "version":
        found = await version.versions(kube)
        out.out(f"plugin:   {found.plugin} (API {found.api})", highlight=False)
        out.out(f"operator: {', '.join(found.operator) or 'not found'}", highlight=False)
        out.out(f"CRD:      {', '.join(found.crd) or 'not found'}", highlight=False)
        for warning in found.warnings():
            out.print(f"warning: {warning}", style="yellow", highlight=False)
        return 0
    if verb == "retry":
        message = await control.retry(kube, args.name, args.code)
    elif verb in {"suspend", "resume"}:
        message = await control.suspend(kube, args.name, verb == "suspend")
    elif verb == "cancel":
        message = await control.cancel(kube, args.name)
    else:
        raise ConsoleError(f"unknown verb {verb}")
    out.out(message, highlight=False)
    return 0


def _local_verb(args: argparse.Namespace) -> int | None:
    """The verbs that need no run: their exit code, or None for the others."""
    if args.verb == "dashboard":
        serve_dashboard(args)
        return 0
    if args.verb == "node-pools":
        namespace = args.namespace or pools.DEFAULT_NAMESPACE
        found = pools.read_pools(namespace, args.name, args.kubeconfig, args.context)
        sys.stdout.write(pools.format_pools(found))
        return 0
    if args.verb not in {"validate", "crds"}:
        return None
    # The CRD generator is slow to import: only these verbs load it.
    from batchpredict.api.crd import crd_files, render  # noqa: PLC0415
    from batchpredict.console.validate import validate  # noqa: PLC0415

    if args.verb == "validate":
        return validate(args.files)
    sys.stdout.write("---\n".join(render(crd) for crd in crd_files().values()))
    return 0


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    local = _local_verb(args)
    if local is not None:
        return local
    plain = args.no_color or "NO_COLOR" in os.environ
    # In a pipe, lines as long as they need (like kubectl), not cut at 80 columns.
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH
    out = Console(no_color=plain, highlight=False, width=width)
    errors = Console(stderr=True, no_color=plain, highlight=False, soft_wrap=True)
    try:
        return asyncio.run(dispatch(args, out))
    except ConsoleError as error:
        errors.print(f"error: {error}", markup=False)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
