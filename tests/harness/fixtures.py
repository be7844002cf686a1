"""pytest fixtures for tests that need a Kubernetes cluster (imported by tests/conftest.py).

- `cluster` (session): a `Cluster`. Without `KUBECONFIG` in the environment it starts a local
  control plane (tests.harness.cluster) in `.cluster/pytest-<pid>/` once per session, building
  the binaries first when they are not cached, and stops it at the end (set
  `BATCHPREDICT_KEEP_CLUSTER=1` to keep its state dir and logs). With `KUBECONFIG` set, it uses
  that cluster (kind, or one from `make cluster-up`) and starts nothing.
- `namespace` (function): a fresh namespace for one test, deleted afterwards.

    def test_something(cluster: Cluster, namespace: str) -> None:
        cluster.apply({...}, namespace)
        job = cluster.wait_for_object("job", "x", namespace, lambda j: "status" in j, "status")
        out = cluster.kubectl("get", "pods", "-n", namespace).stdout

Tests using `cluster` are marked `cluster` automatically (`pytest -m "not cluster"` skips them).
Operators and workers started as subprocesses get the cluster through `cluster.env()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.harness import procs
from tests.harness.cluster import REPO, LocalCluster, build_binaries, cache_bin_dir
from tests.harness.kueue import KUEUE_BUILD_FAILURE, build_kueue, kueue_built
from tests.harness.procs import ClusterError
from tests.harness.served import kubectl_retrying

T = TypeVar("T")
STATE_ROOT = REPO / ".cluster"
# Set when the build before the session failed, so that each test fails at once with it.
_build_failure: list[str] = []


@dataclass(frozen=True)
class Cluster:
    """A cluster the tests can use, local or given by KUBECONFIG."""

    kubeconfig: Path
    kubectl_bin: str
    # The local cluster's state dir (logs, pods/); None for a cluster given by KUBECONFIG.
    state_dir: Path | None

    @property
    def local(self) -> bool:
        """True on the local control plane, where pods run as processes of the node agent."""
        return self.state_dir is not None

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (an operator, kubectl, helm) that talks to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster; raises with its stderr when it fails."""
        result = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def get(self, kind: str, name: str | None = None, namespace: str | None = None) -> Any:
        """`kubectl get -o json` as a dict (a List when `name` is None); None when not found."""
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        result = self.kubectl(*args, check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return json.loads(result.stdout)

    def apply(self, manifest: dict[str, Any] | str, namespace: str | None = None) -> None:
        """`kubectl apply`, retried while the API server answers 503/429 (right after a
        start, see tests.harness.served); raises with kubectl's stderr when it fails."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        what = "manifests" if isinstance(manifest, str) else _describe(manifest)
        args = ["apply", *(["-n", namespace] if namespace else []), "-f", "-"]
        result = kubectl_retrying(self.kubectl, *args, stdin=text, what=what)
        if result.returncode != 0:
            raise AssertionError(f"kubectl apply of {what} failed: {result.stderr.strip()}")

    @staticmethod
    def wait_for(
        check: Callable[[], T | None], what: str, timeout: float = 60, interval: float = 0.5
    ) -> T:
        """Poll `check` until it returns something truthy; fail naming `what` on timeout."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")

    def wait_for_object(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        until: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """Poll `kubectl get kind/name` until `until(obj)` holds; the object then."""

        def check() -> dict[str, Any] | None:
            obj = self.get(kind, name, namespace)
            return obj if obj is not None and until(obj) else None

        return self.wait_for(check, f"{kind}/{name}: {what}", timeout)


def _describe(manifest: dict[str, Any]) -> str:
    return f"{manifest.get('kind')} {manifest.get('metadata', {}).get('name')}"


def kubectl_binary() -> str:
    built = cache_bin_dir() / "kubectl"
    if built.exists():
        return str(built)
    found = shutil.which("kubectl")
    return found or str(build_binaries() / "kubectl")


def _clean_stale_states() -> None:
    """Stop and remove the clusters of earlier pytest sessions that died without teardown."""
    for path in [*STATE_ROOT.glob("pytest-*"), *STATE_ROOT.glob(".pytest-*.lock")]:
        pid = path.name.removeprefix(".").removeprefix("pytest-").removesuffix(".lock")
        if not pid.isdigit() or procs.alive(int(pid)):
            continue
        if path.is_dir():
            LocalCluster(path).down(purge=True)
        (STATE_ROOT / f".pytest-{pid}.lock").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    external = os.environ.get("KUBECONFIG")
    if external:
        yield Cluster(Path(external), kubectl_binary(), None)
        return
    if _build_failure:
        pytest.fail(f"could not start the local cluster: {_build_failure[0]}", pytrace=False)
    _clean_stale_states()
    local = LocalCluster(STATE_ROOT / f"pytest-{os.getpid()}")
    try:
        kubeconfig = local.up()
    except ClusterError as err:
        local.down()
        pytest.fail(f"could not start the local cluster: {err}", pytrace=False)
    try:
        yield Cluster(kubeconfig, str(cache_bin_dir() / "kubectl"), local.state_dir)
    finally:
        keep = os.environ.get("BATCHPREDICT_KEEP_CLUSTER") == "1"
        local.down(purge=not keep)
        if not keep:
            (STATE_ROOT / f".{local.state_dir.name}.lock").unlink(missing_ok=True)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:5]}"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"batchpredict.io/test": "true"}},
        }
    )
    # Pods are refused until the service-account controller has made `default`.
    cluster.wait_for(lambda: cluster.get("serviceaccount", "default", name), "default SA")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that use `cluster` (before `-m` deselects)."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries before the first cluster test, outside any per-test timeout."""
    if session.config.option.collectonly or os.environ.get("KUBECONFIG"):
        return
    if not any(item.get_closest_marker("cluster") for item in session.items):
        return
    need_kueue = any("kueue" in getattr(item, "fixturenames", ()) for item in session.items)
    need_kueue = need_kueue and not kueue_built()
    if not need_kueue and all(
        (cache_bin_dir() / b).exists() for b in ("etcd", "kube-apiserver", "kubectl")
    ):
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        try:
            build_binaries()
        except ClusterError as err:
            _build_failure.append(str(err))
        if need_kueue:
            try:
                build_kueue()
            except ClusterError as err:  # only the Kueue tests fail with it
                KUEUE_BUILD_FAILURE.append(str(err))
