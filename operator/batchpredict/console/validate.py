"""`batchpredict validate FILE...`: check BatchPrediction YAML the way the operator reads it
(exit 1 and one line per problem when invalid)."""

from __future__ import annotations

from pathlib import Path

import yaml

from batchpredict.api.v1alpha1 import KIND
from batchpredict.api.validation import InvalidSpecError, parse_batch_prediction


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
