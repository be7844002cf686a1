"""`batchpredict-operator`: run the kopf operator.

    batchpredict-operator [--namespace NS ...] [--peering NAME] [--liveness-port PORT]

Watches every namespace unless --namespace is given (repeatable). With --peering, replicas
elect a leader through kopf peering (the chart sets it when replicas > 1); without it the
operator runs standalone. The liveness and metrics endpoints listen on $POD_IP (the chart sets
it from the downward API), else on loopback: never on every interface. Configuration comes
from the YAML file named by $BATCHPREDICT_CONFIG.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

from batchpredict.controller import handlers  # noqa: F401 (the import registers the handlers)
from batchpredict.incluster import listen_address


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="batchpredict-operator", description=__doc__)
    parser.add_argument("--namespace", action="append", default=[], help="watch only these")
    parser.add_argument("--peering", default=None, help="kopf peering name (leader election)")
    parser.add_argument("--liveness-port", type=int, default=8081, help="0 disables the probe")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    address = listen_address()
    host = f"[{address}]" if ":" in address else address
    liveness = f"http://{host}:{args.liveness_port}/healthz" if args.liveness_port else None
    asyncio.run(
        kopf.operator(
            registry=kopf.get_default_registry(),
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=args.peering is None,
            peering_name=args.peering,
            liveness_endpoint=liveness,
        )
    )


if __name__ == "__main__":
    main()
