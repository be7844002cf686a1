"""Apply the demo's BatchPrediction (examples/demo/digits.yaml) and follow it as a user would:
`kubectl get bp` rows, printed whenever one changes."""

from __future__ import annotations

import json
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from tests.harness.served import kubectl_retrying

from demo.platform import OPERATOR_NAME, OPERATOR_NAMESPACE, DemoError, Kube
from demo.storage import CREDENTIALS

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "demo" / "digits.yaml"
TERMINAL = {"Succeeded", "PartiallySucceeded", "Failed", "Cancelled"}
# The Secret examples/demo/digits.yaml takes the object store's credentials from.
SECRET_NAME = "demo-s3"  # noqa: S105 (a name, not a password)


def render(s3_endpoint: str, triton_url: str, example: Path = EXAMPLE) -> dict[str, Any]:
    """The example with its ${S3_ENDPOINT} and ${TRITON_URL} filled in."""
    # safe_substitute: the file's comments show shell variables that are not ours.
    text = string.Template(example.read_text()).safe_substitute(
        S3_ENDPOINT=s3_endpoint, TRITON_URL=triton_url
    )
    body = dict(yaml.safe_load(text))
    if "${" in json.dumps(body):
        raise DemoError(f"{example} has a placeholder other than S3_ENDPOINT and TRITON_URL")
    return body


def credentials_secret(namespace: str) -> dict[str, Any]:
    """The Secret holding the object store's credentials, as a user would create it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "namespace": namespace},
        "stringData": CREDENTIALS,
    }


def apply_run(kube: Kube, namespace: str, body: dict[str, Any]) -> str:
    """Create the run afresh (an earlier run of the same name goes first), with the Secret of
    the object store's credentials beside it."""
    name = str(body["metadata"]["name"])
    kube.kubectl("create", "namespace", namespace, check=False)
    kube.kubectl(
        "delete", "bp", name, "-n", namespace, "--ignore-not-found", "--wait=true", timeout=120
    )
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(credentials_secret(namespace)))
    # Retried through the moment after a cluster start when the API server still answers 503.
    applied = kubectl_retrying(
        kube.kubectl, "apply", "-n", namespace, "-f", "-",
        stdin=json.dumps(body), what=f"BatchPrediction {namespace}/{name}",
    )  # fmt: skip
    if applied.returncode != 0:
        raise DemoError(f"kubectl apply of bp/{name} failed: {applied.stderr.strip()}")
    return name


def get_run(kube: Kube, name: str, namespace: str) -> dict[str, Any]:
    found = kube.kubectl("get", "bp", name, "-n", namespace, "-o", "json")
    return dict(json.loads(found.stdout))


def _without_age(header: str, row: str) -> tuple[str, str]:
    """The `kubectl get` header and row without the AGE column, which changes every second."""
    cut = header.find("AGE")
    return (header[:cut].rstrip(), row[:cut].rstrip()) if cut > 0 else (header, row)


def operator_log(kube: Kube, lines: int = 30) -> str:
    result = kube.kubectl(
        "logs", "-n", OPERATOR_NAMESPACE, f"deploy/{OPERATOR_NAME}", f"--tail={lines}", check=False
    )
    return result.stdout + result.stderr


def follow(
    kube: Kube,
    name: str,
    namespace: str,
    show: Callable[[str], None],
    *,
    timeout: float = 600,
    pickup_timeout: float = 90,
) -> dict[str, Any]:
    """Print `kubectl get bp` (header once, then each changed row) until the run ends; its
    final object."""
    started = time.monotonic()
    last_row = ""
    while time.monotonic() - started < timeout:
        lines = kube.kubectl("get", "bp", name, "-n", namespace).stdout.splitlines()
        if len(lines) >= 2:
            header, row = _without_age(lines[0], lines[1])
            if not last_row:
                show(f"{'TIME':>7}  {header}")
            if row != last_row:
                show(f"{time.monotonic() - started:6.1f}s  {row}")
                last_row = row
        status = get_run(kube, name, namespace).get("status") or {}
        if status.get("phase") in TERMINAL:
            return get_run(kube, name, namespace)
        if not status.get("phase") and time.monotonic() - started > pickup_timeout:
            raise DemoError(
                f"the operator did not pick up bp/{name} within {pickup_timeout:.0f} s; "
                f"its log:\n{operator_log(kube)}"
            )
        time.sleep(1)
    pods = kube.kubectl("get", "jobs,pods", "-n", namespace, check=False).stdout
    raise DemoError(
        f"{name} did not finish within {timeout:.0f} s; jobs and pods:\n{pods}\n"
        f"see: kubectl describe bp {name} -n {namespace}"
    )
