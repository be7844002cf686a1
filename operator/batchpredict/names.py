"""Derived names: the one place that knows Kubernetes' length limits.

Every object the operator or a worker creates for a run is named from the run's name and UID,
so that any legal run name (up to 253 characters) works, and no two runs' children can share a
name: the UID part differs even where one run's name is a prefix of another's.
"""

from __future__ import annotations

import hashlib

# Label values (the Job controller copies Job names into pod labels).
MAX_LABEL = 63
# Job names: a pod of an Indexed Job is named `<job>-<index>` as its hostname, a DNS label of
# at most 63 characters, and an index takes up to 5 digits (100,000 completions at most).
MAX_JOB_NAME = MAX_LABEL - len("-99999")
# Names of other objects (DNS subdomains).
MAX_OBJECT_NAME = 253
# Characters of the run's UID in child names: enough to tell runs apart, short enough to read.
UID_CHARS = 8


def fit(value: str, room: int = MAX_LABEL) -> str:
    """`value`, or a prefix of it plus a stable hash when it is longer than `room`."""
    if len(value) <= room:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{value[: room - len(digest) - 1].rstrip('-.')}-{digest}"


def run_suffixed(name: str, run_uid: str, suffix: str, limit: int = MAX_LABEL) -> str:
    """`<name>-<uid8>-<suffix>` within `limit`; the UID part and the suffix always survive."""
    tail = f"{run_uid[:UID_CHARS]}-{suffix}"
    return f"{fit(name, limit - len(tail) - 1)}-{tail}"
