"""A real, local Kubernetes control plane for tests and the demo, without Docker.

    python -m tests.harness.cluster up   [--state-dir DIR] [--port PORT]
    python -m tests.harness.cluster down [--state-dir DIR] [--purge]
    python -m tests.harness.cluster status [--state-dir DIR]

`up` builds the binaries when missing (hack/k8s/build.sh), then starts etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and the test node agent on free loopback ports, with a
fresh CA, serving certificates, service-account keys, RBAC and a token kubeconfig at
`<state dir>/kubeconfig`; its last stdout line is `export KUBECONFIG=<path>`. `up` on a running
cluster only prints that line; `up` over the remains of a dead one cleans them first. `down` stops
every process the cluster started. The default state dir is `.cluster/local` in the repository.
Logs: `<state dir>/logs/<component>.log`; containers: `<state dir>/pods/<ns>_<pod>/`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.harness import procs
from tests.harness.components import (
    Ports,
    apiserver_args,
    controller_manager_args,
    default_nodes,
    etcd_args,
    scheduler_args,
    write_kubeconfig,
)
from tests.harness.pki import Pki, generate_pki
from tests.harness.procs import ClusterError

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "k8s" / "build.sh"
DEFAULT_STATE_DIR = REPO / ".cluster" / "local"
# Stop order: the node agent first (it kills the containers), etcd last.
COMPONENTS = ("node-agent", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
START_TIMEOUT = 90.0


def k8s_version() -> str:
    match = re.search(r'^K8S_VERSION="([^"]+)"', BUILD_SCRIPT.read_text(), re.MULTILINE)
    if not match:
        raise ClusterError(f"no K8S_VERSION in {BUILD_SCRIPT}")
    return match.group(1)


def cache_bin_dir() -> Path:
    cache = os.environ.get("BATCHPREDICT_CACHE") or str(Path.home() / ".cache" / "batchpredict")
    return Path(cache) / f"k8s-{k8s_version()}" / "bin"


def build_binaries() -> Path:
    """Run hack/k8s/build.sh (a no-op when cached); the bin directory it prints."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    if result.returncode != 0:
        raise ClusterError(f"building the control plane binaries failed ({BUILD_SCRIPT})")
    return Path(result.stdout.strip().splitlines()[-1])


def _log(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


class LocalCluster:
    """One control plane whose every file lives under `state_dir`."""

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, apiserver_port: int | None = None):
        self.state_dir = state_dir.absolute()
        self.apiserver_port = apiserver_port
        self.pki = Pki(self.state_dir / "pki")
        self.kubeconfig = self.state_dir / "kubeconfig"
        self._lock = self.state_dir.parent / f".{self.state_dir.name}.lock"

    # -- queries -------------------------------------------------------------------------
    def ports(self) -> Ports:
        return Ports(**json.loads((self.state_dir / "ports.json").read_text()))

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports().apiserver}"

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki.ca_cert))

    def api_get(self, path: str, timeout: float = 5.0) -> Any:
        headers = {"Authorization": f"Bearer {self.pki.token('admin')}"}
        request = urllib.request.Request(self.server + path, headers=headers)  # noqa: S310
        _, body = _fetch(request, timeout, self._context())
        return json.loads(body) if body.startswith(b"{") else body.decode()

    def is_running(self) -> bool:
        """Every component alive and the API server ready."""
        pid_dir = self.state_dir / "pids"
        for name in COMPONENTS:
            pid = procs.pid_from_file(pid_dir / f"{name}.pid")
            if pid is None or not procs.alive(pid) or not procs.carries_marker(pid, self.state_dir):
                return False
        try:
            return bool(self.api_get("/readyz") == "ok")
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            return False

    # -- up / down -----------------------------------------------------------------------
    def up(self) -> Path:
        """Start the cluster unless it runs already; the kubeconfig path."""
        if self.state_dir.exists() and not self.state_dir.is_dir():
            raise ClusterError(f"state dir {self.state_dir} exists and is not a directory")
        with procs.locked(self._lock):
            if self.is_running():
                _log(f"already running ({self.state_dir})")
                return self.kubeconfig
            if self.state_dir.exists():
                _log(f"removing the state of a stopped cluster in {self.state_dir}")
                procs.stop_cluster_processes(self.state_dir, COMPONENTS)
                shutil.rmtree(self.state_dir)
            if self.apiserver_port is not None:
                procs.ensure_port_free(self.apiserver_port, "the API server")
            bin_dir = build_binaries()
            try:
                self._start(bin_dir)
            except BaseException:
                procs.stop_cluster_processes(self.state_dir, COMPONENTS)
                raise
        return self.kubeconfig

    def down(self, purge: bool = False) -> list[str]:
        """Stop every process of this cluster; with `purge` remove its state dir too."""
        with procs.locked(self._lock):
            stopped = procs.stop_cluster_processes(self.state_dir, COMPONENTS)
            if purge and self.state_dir.is_dir():
                shutil.rmtree(self.state_dir)
        return stopped

    def restart_apiserver(self) -> None:
        """Stop the API server and start it again on its port, over the kept etcd data and
        certificates: to clients, a control-plane restart. Returns once /readyz says ok."""
        with procs.locked(self._lock):
            if not (self.state_dir / "ports.json").exists():
                raise ClusterError(f"no cluster in {self.state_dir} to restart")
            pid = procs.pid_from_file(self.state_dir / "pids" / "kube-apiserver.pid")
            if pid is not None and procs.carries_marker(pid, self.state_dir):
                # Its graceful shutdown can take 15 s here; past 3 s it is killed, as in a crash.
                procs.stop([pid], grace=3.0)
            apiserver = self._spawn(
                "kube-apiserver",
                build_binaries(),
                apiserver_args(self.pki, self.ports(), self.state_dir),
            )
            self._wait("kube-apiserver", apiserver, self._api_ready)

    # -- internals -----------------------------------------------------------------------
    def _start(self, bin_dir: Path) -> None:
        started = time.monotonic()
        self.state_dir.mkdir(parents=True)
        ports = Ports(
            etcd=procs.free_port(),
            etcd_peer=procs.free_port(),
            apiserver=self.apiserver_port or procs.free_port(),
            controller_manager=procs.free_port(),
            scheduler=procs.free_port(),
            kubelet=procs.free_port(),
        )
        (self.state_dir / "ports.json").write_text(json.dumps(ports.__dict__, indent=2))
        generate_pki(self.pki.directory)
        server = f"https://127.0.0.1:{ports.apiserver}"
        for user, path in (
            ("admin", self.kubeconfig),
            (
                "system:kube-controller-manager",
                self.state_dir / "kube-controller-manager.kubeconfig",
            ),
            ("system:kube-scheduler", self.state_dir / "kube-scheduler.kubeconfig"),
        ):
            write_kubeconfig(path, server, self.pki.ca_cert, user, self.pki.token(user))

        etcd = self._spawn("etcd", bin_dir, etcd_args(self.state_dir, ports))
        self._wait("etcd", etcd, lambda: self._http_ok(f"http://127.0.0.1:{ports.etcd}/health"))
        apiserver = self._spawn(
            "kube-apiserver", bin_dir, apiserver_args(self.pki, ports, self.state_dir)
        )
        self._wait("kube-apiserver", apiserver, self._api_ready)
        kcm = self._spawn(
            "kube-controller-manager",
            bin_dir,
            controller_manager_args(self.state_dir, self.pki, ports),
        )
        scheduler = self._spawn("kube-scheduler", bin_dir, scheduler_args(self.state_dir, ports))
        agent = procs.spawn(
            "node-agent",
            [sys.executable, "-m", "tests.harness.node_agent", str(self._write_agent_config())],
            self.state_dir,
            cwd=REPO,
        )
        self._wait("kube-controller-manager", kcm, lambda: self._healthz(ports.controller_manager))
        self._wait("kube-scheduler", scheduler, lambda: self._healthz(ports.scheduler))
        self._wait("node-agent", agent, self._nodes_ready)
        # Pods cannot be created before the service-account controller made `default`.
        self._wait("kube-controller-manager", kcm, self._default_sa_exists)
        _log(f"up in {time.monotonic() - started:.1f} s: {self.server}, state in {self.state_dir}")

    def _spawn(self, name: str, bin_dir: Path, args: list[str]) -> subprocess.Popen[bytes]:
        return procs.spawn(name, [str(bin_dir / name), *args], self.state_dir)

    def _write_agent_config(self) -> Path:
        p = self.ports()
        path = self.state_dir / "node-agent.json"
        config = {
            "server": self.server,
            "caFile": str(self.pki.ca_cert),
            "token": self.pki.token("admin"),
            "stateDir": str(self.state_dir),
            "kubeletPort": p.kubelet,
            "servingCert": str(self.pki.serving_cert),
            "servingKey": str(self.pki.serving_key),
            "clientCaFile": str(self.pki.ca_cert),
            "pathPrefix": str(Path(sys.executable).parent),
            "kubeletVersion": k8s_version(),
            "nodes": default_nodes(),
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    # -- readiness -----------------------------------------------------------------------
    def _wait(self, name: str, proc: subprocess.Popen[bytes], ready: Any) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClusterError(
                    f"{name} exited with code {proc.returncode} while starting:\n"
                    + procs.log_tail(self.state_dir, name)
                )
            if ready():
                return
            time.sleep(0.2)
        raise ClusterError(
            f"{name} not ready after {START_TIMEOUT:.0f} s:\n"
            + procs.log_tail(self.state_dir, name)
        )

    def _http_ok(self, url: str) -> bool:
        try:
            return _fetch(url, 2, None)[0] == 200
        except (OSError, urllib.error.URLError):
            return False

    def _api_ready(self) -> bool:
        try:
            return bool(self.api_get("/readyz", timeout=2) == "ok")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def _healthz(self, port: int) -> bool:
        # The components' serving certificates are self-signed on the fly: skip verification.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            return _fetch(f"https://127.0.0.1:{port}/healthz", 2, context)[0] == 200
        except (OSError, urllib.error.URLError):
            return False

    def _nodes_ready(self) -> bool:
        try:
            items = self.api_get("/api/v1/nodes")["items"]
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            return False
        ready = {
            node["metadata"]["name"]
            for node in items
            for cond in node.get("status", {}).get("conditions", [])
            if cond["type"] == "Ready" and cond["status"] == "True"
        }
        return ready >= {node["name"] for node in default_nodes()}

    def _default_sa_exists(self) -> bool:
        try:
            self.api_get("/api/v1/namespaces/default/serviceaccounts/default")
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return True


def _fetch(
    request: str | urllib.request.Request, timeout: float, context: ssl.SSLContext | None
) -> tuple[int, bytes]:
    # Only ever URLs this module builds for loopback components, hence S310 is moot.
    with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:  # noqa: S310
        return int(resp.status), bytes(resp.read())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "build"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--port", type=int, help="API server port (default: a free one)")
    parser.add_argument("--purge", action="store_true", help="down: also remove the state dir")
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.state_dir, args.port)
    try:
        if args.command == "build":
            print(build_binaries())
        elif args.command == "up":
            print(f"export KUBECONFIG={cluster.up()}")
        elif args.command == "down":
            stopped = cluster.down(purge=args.purge)
            _log(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
        elif cluster.is_running():
            print(f"running: {cluster.server}\nexport KUBECONFIG={cluster.kubeconfig}")
        else:
            print("not running")
            return 1
    except ClusterError as err:
        print(f"cluster {args.command} failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
