"""Custom resources right after a cluster (re)start: wait until the API server really serves
them, and create them through the short window in which it still refuses them.

A CRD's stored `Established` condition says nothing about the API server process in front of
it: after a restart it is true at once, while the server is still loading its CRDs. For a
moment discovery may not list the resource, lists answer 429 while the watch cache fills, and
creates answer 503 `Resource kind ... not found` from the MutatingAdmissionPolicy plugin (the
started-by policy), which learns CRD schemas by polling /openapi/v3 every 5 s
(k8s.io/apiserver admission/plugin/policy/mutating/patch/typeconverter.go).
`wait_until_served` waits until none of these happens any more (a server-side dry-run create
passes admission); `kubectl_retrying` rides out any that come back later.

    install_crds(cluster.kubectl, REPO / "crds")           # apply, then wait until served
    kubectl_retrying(cluster.kubectl, "apply", "-f", "-", stdin=text, what="bp/x")

`kubectl` is any `kubectl(*args, stdin=, check=, timeout=)` bound to one cluster (the tests'
`Cluster.kubectl`, the demo's `Kube.kubectl`).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from tests.harness.procs import ClusterError

# 503 (admission or the aggregator not ready), 429 (watch cache filling, priority and
# fairness), and the API server not listening yet: all pass within seconds of a start.
TRANSIENT = re.compile(
    r"\((ServiceUnavailable|TooManyRequests)\)"
    r"|the server is currently unable to handle the request"
    r"|connection refused|connect: connection reset|was refused"
)
RETRY_TIMEOUT = 60.0
SERVED_TIMEOUT = 90.0


class NotServedError(ClusterError):
    """The API server kept refusing a resource past the deadline; the message names it."""


class Kubectl(Protocol):
    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...


@dataclass(frozen=True)
class ServedResource:
    """One served version of a CRD's resource."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def path(self) -> str:
        return f"/apis/{self.group}/{self.version}"

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}/{self.version}"


def crd_resources(manifests: Iterable[dict[str, Any]]) -> list[ServedResource]:
    """The served resources of the CustomResourceDefinitions among `manifests`."""
    return [
        ServedResource(
            doc["spec"]["group"],
            version["name"],
            doc["spec"]["names"]["plural"],
            doc["spec"]["names"]["kind"],
            doc["spec"].get("scope", "Namespaced") == "Namespaced",
        )
        for doc in manifests
        if doc and doc.get("kind") == "CustomResourceDefinition"
        for version in doc["spec"]["versions"]
        if version.get("served", True)
    ]


def read_manifests(directory: Path) -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(directory.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def is_transient(stderr: str) -> bool:
    return bool(TRANSIENT.search(stderr))


def kubectl_retrying(
    kubectl: Kubectl,
    *args: str,
    what: str,
    stdin: str | None = None,
    timeout: float = RETRY_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """`kubectl args`, again after a short backoff while the API server answers 503/429 or
    refuses connections; the first result that is not such a refusal (the caller checks its
    returncode). Raises NotServedError naming `what` when the refusals outlast `timeout`.
    Only for requests that are safe to repeat: a refused request changed nothing."""
    started = time.monotonic()
    delay, attempts = 0.25, 0
    while True:
        result = kubectl(*args, stdin=stdin, check=False)
        attempts += 1
        if result.returncode == 0 or not is_transient(result.stderr):
            return result
        waited = time.monotonic() - started
        if waited + delay > timeout:
            raise NotServedError(
                f"{what}: the API server still refused it after {waited:.0f} s "
                f"({attempts} tries): {result.stderr.strip()}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _not_served_because(
    kubectl: Kubectl, resource: ServedResource, openapi: Collection[str]
) -> str | None:
    """Why `resource` is not served yet, or None when discovery lists it, a list of it
    answers, the OpenAPI document (what admission policies type objects by) has it and a
    dry-run create passes admission."""
    found = kubectl("get", "--raw", resource.path, check=False, timeout=15)
    if found.returncode != 0:
        return f"discovery of {resource.path}: {found.stderr.strip()}"
    names = {r.get("name") for r in json.loads(found.stdout).get("resources", [])}
    if resource.plural not in names:
        return f"discovery of {resource.path} does not list {resource.plural}"
    listed = kubectl("get", "--raw", f"{resource.path}/{resource.plural}?limit=1", check=False)
    if listed.returncode != 0:
        return f"listing {resource.plural}: {listed.stderr.strip()}"
    if resource.path.lstrip("/") not in openapi:
        return f"/openapi/v3 does not list {resource.path}"
    return _refuses_creates(kubectl, resource)


def _refuses_creates(kubectl: Kubectl, resource: ServedResource) -> str | None:
    """Why a server-side dry-run create is refused (503 from admission), or None. The probe
    has no spec: refused as invalid, it has passed admission, which is what this checks."""
    meta = {"name": "served-probe"} | ({"namespace": "default"} if resource.namespaced else {})
    probe = {"apiVersion": f"{resource.group}/{resource.version}", "kind": resource.kind}
    created = kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        stdin=json.dumps(probe | {"metadata": meta}),
        check=False,
    )
    if created.returncode != 0 and (
        is_transient(created.stderr) or "no matches for kind" in created.stderr
    ):
        return f"a create of {resource.kind} is refused: {created.stderr.strip()}"
    return None


def wait_until_served(
    kubectl: Kubectl, resources: Sequence[ServedResource], timeout: float = SERVED_TIMEOUT
) -> None:
    """Poll until the API server serves every resource; NotServedError naming the first that
    is not, and why, after `timeout`."""
    deadline = time.monotonic() + timeout
    pending = list(resources)
    reason = ""
    while pending:
        found = kubectl("get", "--raw", "/openapi/v3", check=False, timeout=15)
        openapi = set(json.loads(found.stdout)["paths"]) if found.returncode == 0 else set()
        while pending:
            why = _not_served_because(kubectl, pending[0], openapi)
            if why is not None:
                reason = why
                break
            pending.pop(0)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise NotServedError(f"{pending[0]} not served after {timeout:.0f} s: {reason}")
        time.sleep(0.5)


def install_crds(kubectl: Kubectl, directory: Path, timeout: float = SERVED_TIMEOUT) -> None:
    """Apply the CRDs in `directory` (server-side, taking over their fields, so a re-run
    updates them) and wait until the API server serves each of their resources."""
    result = kubectl_retrying(
        kubectl,
        "apply", "--server-side", "--force-conflicts", "-f", str(directory),
        what=f"the CRDs in {directory}",
    )  # fmt: skip
    if result.returncode != 0:
        raise ClusterError(f"applying the CRDs in {directory} failed: {result.stderr.strip()}")
    wait_until_served(kubectl, crd_resources(read_manifests(directory)), timeout)
