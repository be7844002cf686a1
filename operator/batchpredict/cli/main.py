"""`batchpredict validate FILE...` checks BatchPrediction YAML the way the operator reads it;
`batchpredict crds` prints the CustomResourceDefinitions; `batchpredict node-pools` lists the
node pools a run may name in spec.worker.nodePool.

    batchpredict validate examples/minimal.yaml    # exit 1 and one line per problem if invalid
    batchpredict crds | kubectl apply --server-side -f -
    batchpredict node-pools [-n batchpredict-system] [--name batchpredict-node-pools]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from batchpredict.api.crd import crd_files, render
from batchpredict.api.v1alpha1 import KIND
from batchpredict.api.validation import InvalidSpecError, parse_batch_prediction
from batchpredict.cli.pools import DEFAULT_NAME, DEFAULT_NAMESPACE, format_pools, read_pools


def validate(paths: list[Path]) -> int:
    """Print `OK` or the problems of every BatchPrediction in `paths`; 1 when any is invalid."""
    failed = False
    for path in paths:
        try:
            documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except (OSError, yaml.YAMLError) as error:
            print(f"{path}: cannot read: {error}")
            failed = True
            continue
        for doc in documents:
            if not isinstance(doc, dict) or doc.get("kind") != KIND:
                continue
            name = (doc.get("metadata") or {}).get("name", "<no name>")
            try:
                parse_batch_prediction(doc)
            except InvalidSpecError as error:
                failed = True
                for problem in error.problems:
                    print(f"{path}: {name}: {problem}")
            else:
                print(f"{path}: {name}: OK")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="batchpredict", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="check BatchPrediction YAML files")
    check.add_argument("files", nargs="+", type=Path)
    commands.add_parser("crds", help="print the CRDs as YAML")
    pools = commands.add_parser(
        "node-pools", help="list the node pools spec.worker.nodePool may name"
    )
    pools.add_argument(
        "-n", "--namespace", default=DEFAULT_NAMESPACE, help="the operator's namespace"
    )
    pools.add_argument(
        "--name", default=DEFAULT_NAME, help="the ConfigMap (the chart's <release>-node-pools)"
    )
    args = parser.parse_args(argv)
    if args.command == "validate":
        sys.exit(validate(args.files))
    if args.command == "node-pools":
        sys.stdout.write(format_pools(read_pools(args.namespace, args.name)))
        return
    sys.stdout.write("---\n".join(render(crd) for crd in crd_files().values()))


if __name__ == "__main__":
    main()
