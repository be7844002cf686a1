"""Fixtures of the dashboard tier: a real headless Chromium (`browser`, one per session; `page`,
one tab per test), the dashboard as its console script against the test cluster in local mode
(`dashboard`: the test's kubeconfig, as `kubectl batchpredict dashboard` runs it) and in the
chart's read-only mode (`read_only_dashboard`: `--read-only` under the chart's own dashboard
ServiceAccount and ClusterRole, rendered by helm and applied), plus the e2e tier's operator.
Screenshots of both pages go to `test-output/dashboard/` (`screenshots`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dashboard.cdp import Chromium, Page, chromium_binary
from tests.e2e.conftest import installed_crds, operator_process  # noqa: F401 - fixtures
from tests.harness.fixtures import Cluster

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
DASHBOARD_NAMESPACE = "batchpredict-dashboard-test"


@dataclass
class Dashboard:
    """`batchpredict-dashboard` as a subprocess; `url` from the line it prints."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_dashboard(env: dict[str, str], log_path: Path, *args: str) -> Dashboard:
    log = log_path.open("ab")
    process = subprocess.Popen(
        [str(VENV_BIN / "batchpredict-dashboard"), "--port", "0", "--no-browser", *args],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"dashboard on (http://\S+/)", log_path.read_text(errors="replace"))
        if found:
            return Dashboard(found.group(1), process, log_path)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"the dashboard did not start:\n{log_path.read_text(errors='replace')}")


_install_error: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Install chromium (hack/chromium/install.sh, apt) before any test runs when this tier is
    selected and it is missing, so the install is not under a test's timeout."""
    here = Path(__file__).parent
    if not any(here in Path(str(item.path)).parents for item in items):
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        try:
            chromium_binary()
        except RuntimeError as error:
            _install_error.append(str(error))  # the `browser` fixture fails with it
            print(f"\ninstalling chromium failed: {error}")


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if _install_error:
        pytest.fail(_install_error[0], pytrace=False)
    chromium = Chromium(tmp_path_factory.mktemp("chromium") / "profile")
    chromium.start()
    yield chromium
    chromium.stop()


@pytest.fixture
async def page(browser: Chromium) -> AsyncIterator[Page]:
    tab = await Page.open(browser.port)
    await tab.viewport(1280, 900)
    yield tab
    await tab.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """`test-output/dashboard/` in the repository (ignored by git), or under
    $BATCHPREDICT_TEST_OUTPUT: kept after the run, unlike pytest's rotating temp dirs."""
    root = Path(os.environ.get("BATCHPREDICT_TEST_OUTPUT") or REPO / "test-output")
    path = root / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="package")
def dashboard(
    installed_crds: Cluster,  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Dashboard]:
    """Local mode: the test cluster's kubeconfig (an admin's: every namespace)."""
    workdir = tmp_path_factory.mktemp("dashboard")
    server = start_dashboard(installed_crds.env(), workdir / "dashboard.log")
    yield server
    server.stop()


def _chart_dashboard_rbac(cluster: Cluster, workdir: Path) -> list[dict[str, object]]:
    """The chart's dashboard ServiceAccount, ClusterRole and binding, as helm renders them."""
    from tests.chart.helm import Helm, build_helm  # noqa: PLC0415 (builds helm on first use)

    helm = Helm(build_helm(), workdir / "helm")
    rendered = helm.render(namespace=DASHBOARD_NAMESPACE, sets={"dashboard.enabled": "true"})
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    return [
        o
        for o in rendered
        if o["kind"] in kinds
        and o["metadata"]["labels"]["app.kubernetes.io/component"] == "dashboard"
    ]


@pytest.fixture(scope="package")
def read_only_dashboard(
    installed_crds: Cluster,  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Dashboard]:
    """The chart's in-cluster mode: `--read-only`, with the token of the chart's dashboard
    ServiceAccount (get/list/watch only) in place of the pod's mounted one."""
    cluster = installed_crds
    workdir = tmp_path_factory.mktemp("read-only-dashboard")
    cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DASHBOARD_NAMESPACE}}
    )
    objects = _chart_dashboard_rbac(cluster, workdir)
    assert {o["kind"] for o in objects} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    for obj in objects:
        cluster.apply(obj, DASHBOARD_NAMESPACE if obj["kind"] == "ServiceAccount" else None)
    account = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
    token = cluster.kubectl("create", "token", str(account), "-n", DASHBOARD_NAMESPACE).stdout
    config = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    config["users"][0]["user"] = {"token": token.strip()}
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    kubeconfig.chmod(0o600)
    server = start_dashboard(
        {**os.environ, "KUBECONFIG": str(kubeconfig)}, workdir / "dashboard.log", "--read-only"
    )
    yield server
    server.stop()
    for obj in objects:
        if obj["kind"] != "ServiceAccount":
            cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], check=False)
    cluster.kubectl("delete", "namespace", DASHBOARD_NAMESPACE, "--wait=false", check=False)
