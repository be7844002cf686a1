"""Runs one pod bound to a test node, the way a kubelet would: its containers as local
processes, or in containers with runc from their images (tests.harness.runc: the container mode,
chosen per namespace).

Order: volumes, init containers one by one (native sidecars, i.e. init containers with
`restartPolicy: Always`, start and stay up, their startup probe awaited), then the app
containers together under the pod's restartPolicy; sidecars stop once the app containers are
done. Status goes to pods/status after every change. Deleting the pod kills every process group
(SIGTERM, then SIGKILL after the grace period) and then removes the pod with grace 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from tests.harness import oci, podenv, probes, runc, triton_standin
from tests.harness.kubeclient import ApiError, KubeClient

MAX_BACKOFF = 10.0
# Tries to write a pod's status before giving up (about 5 minutes at MAX_BACKOFF).
STATUS_ATTEMPTS = 35


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Node(Protocol):
    client: KubeClient
    state_dir: Path
    base_env: dict[str, str]


@dataclass
class Container:
    spec: dict[str, Any]
    kind: str  # "init", "sidecar" or "app"
    directory: Path
    proc: asyncio.subprocess.Process | None = None
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "PodInitializing"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    restarts: int = 0
    started: bool = False
    # Set the first time the container counts as started (its startup probe passed).
    first_start: asyncio.Event = field(default_factory=asyncio.Event)
    # Container mode only: the image, env, security settings and mounts of every run.
    prepared: runc.Prepared | None = None
    container_id: str = ""

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def root(self) -> Path:
        """Where the container's pod paths live (see podenv)."""
        return self.directory / "root"

    @property
    def log_path(self) -> Path:
        """Output of the current run; earlier runs stay in <restart count>.log."""
        return self.directory / f"{self.restarts}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def status(self) -> dict[str, Any]:
        running = "running" in self.state
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": running and self.started,
            "restartCount": self.restarts,
            "started": running and self.started,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        if self.prepared is not None:
            status["imageID"] = f"local://{self.prepared.image.rootfs.parent}"
        return status


class PodRunner:
    """Started by the node agent for each new pod on its nodes; `stop()` when it is deleted."""

    def __init__(self, node: Node, pod: dict[str, Any]) -> None:
        self.node, self.pod = node, pod
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.path = f"/api/v1/namespaces/{self.ns}/pods/{self.name}"
        self.directory = node.state_dir / "pods" / f"{self.ns}_{self.name}_{self.uid[:8]}"
        spec = pod["spec"]
        self.restart_policy = spec.get("restartPolicy", "Always")
        inits = spec.get("initContainers") or []
        self.containers = [
            Container(c, "sidecar" if c.get("restartPolicy") == "Always" else "init", self._cdir(c))
            for c in inits
        ] + [Container(c, "app", self._cdir(c)) for c in spec["containers"]]
        self.phase = "Pending"
        self.initialized = False
        self.start_time = now()
        self._apps_done = False
        self._status_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._sidecars: list[asyncio.Task[bool]] = []
        self.runc: runc.RuncPod | None = None
        self.task: asyncio.Task[None] = asyncio.create_task(self._run(), name=f"pod {self.path}")

    def _cdir(self, spec: dict[str, Any]) -> Path:
        return self.directory / "containers" / str(spec["name"])

    def container(self, name: str) -> Container | None:
        return next((c for c in self.containers if c.name == name), None)

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    # -- lifecycle -----------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._prepare()
        except (
            podenv.PodConfigError,
            oci.ContainerConfigError,
            runc.ImageError,
            ApiError,
            OSError,
        ) as err:
            reason = getattr(err, "reason", "CreateContainerError")
            for c in self.containers:
                c.state = {"waiting": {"reason": reason, "message": str(err)}}
            await self.report()
            return
        await self.report()
        for c in self.containers:
            if c.kind == "sidecar":
                self._sidecars.append(asyncio.create_task(self._supervise(c)))
                waits = {
                    asyncio.create_task(c.first_start.wait()),
                    asyncio.create_task(self._stopping.wait()),
                }
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in waits:
                    task.cancel()
            elif c.kind == "init" and not await self._supervise(c):
                await self._finish()
                return
        self.initialized = True
        await asyncio.gather(*(self._supervise(c) for c in self.containers if c.kind == "app"))
        await self._finish()

    async def _finish(self) -> None:
        self._apps_done = True
        for c in reversed([c for c in self.containers if c.kind == "sidecar"]):
            await self._kill(c, grace=5.0)
        if self.runc is not None:
            self.runc.remove_cgroups()
        if self._stopping.is_set():
            return
        failed = any(
            c.state.get("terminated", {}).get("exitCode", 0) != 0
            for c in self.containers
            if c.kind != "sidecar"
        )
        self.phase = "Failed" if failed else "Succeeded"
        await self.report()

    async def _prepare(self) -> None:
        objects = podenv.ObjectCache(self.node.client, self.ns)
        volumes = {}
        for volume in self.pod["spec"].get("volumes") or []:
            volumes[volume["name"]] = await podenv.materialize_volume(
                volume, self.directory / "volumes" / volume["name"], self.pod, objects, self._token
            )
        namespace = await self.node.client.get(f"/api/v1/namespaces/{self.ns}")
        if runc.runtime_for(namespace) == "runc":
            self.runc = runc.RuncPod(self.node.state_dir, self.pod, self.directory)
        base = {**self.node.base_env, "HOSTNAME": self.name}
        for c in self.containers:
            (c.root / "dev").mkdir(parents=True, exist_ok=True)
            if self.runc is not None:
                c.prepared = await self.runc.prepare(
                    c.spec, volumes, objects, self.node.base_env, c.root
                )
                c.env = c.prepared.env
                c.state = {"waiting": {"reason": "PodInitializing"}}
                continue
            podenv.link_mounts(c.root, c.spec, volumes)
            extra = {"BATCHPREDICT_CONTAINER_ROOT": str(c.root)}
            c.env = await podenv.container_env(self.pod, c.spec, base | extra, objects)
            c.state = {"waiting": {"reason": "PodInitializing"}}

    async def _token(self, audience: str | None, seconds: int) -> str:
        sa = self.pod["spec"].get("serviceAccountName", "default")
        spec: dict[str, Any] = {
            "expirationSeconds": seconds,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self.name,
                "uid": self.uid,
            },
        }
        if audience:
            spec["audiences"] = [audience]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        path = f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token"
        return str((await self.node.client.create(path, body))["status"]["token"])

    async def _supervise(self, c: Container) -> bool:
        """Run `c` until it need not restart; whether its last run exited 0."""
        backoff = 1.0
        while True:
            code = await self._run_once(c)
            if c.kind == "sidecar":
                restart = not self._apps_done
            elif c.kind == "init":
                restart = code != 0 and self.restart_policy != "Never"
            else:
                restart = self.restart_policy == "Always" or (
                    self.restart_policy == "OnFailure" and code != 0
                )
            if not restart or self._stopping.is_set():
                return code == 0
            c.last_state, c.state = (
                c.state,
                {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {backoff:.0f}s"}},
            )
            c.restarts += 1
            await self.report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            if self._stopping.is_set():
                return False
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _run_once(self, c: Container) -> int:
        argv = [
            podenv.expand(a, c.env)
            for a in (c.spec.get("command") or []) + (c.spec.get("args") or [])
        ]
        message_file = c.root / c.spec.get("terminationMessagePath", "/dev/termination-log").lstrip(
            "/"
        )
        message_file.parent.mkdir(parents=True, exist_ok=True)
        message_file.write_text("")
        started = now()
        try:
            cwd: Path | None = None
            if self.runc is not None:
                argv, cwd = await self._runc_argv(c, message_file)
            elif not c.spec.get("command"):
                raise FileNotFoundError("the test node agent runs no images: set the command")
            else:
                argv = triton_standin.standin_argv(str(c.spec.get("image", "")), argv)
            with c.log_path.open("ab") as log:
                c.proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    env=c.env if self.runc is None else None,
                    cwd=cwd or self._workdir(c),
                    start_new_session=True,
                )
            c.container_id = (
                f"runc://{self.runc.ids[c.name]}" if self.runc else f"local://{c.proc.pid}"
            )
        except (OSError, oci.ContainerConfigError) as err:
            c.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": f"failed to start {argv[:1]}: {err}",
                    "startedAt": started,
                    "finishedAt": now(),
                }
            }
            await self.report()
            return 128
        c.state = {"running": {"startedAt": started}}
        probe = c.spec.get("startupProbe")
        c.started = probe is None
        if c.started:
            c.first_start.set()
        probing = asyncio.create_task(self._startup_probe(c, probe)) if probe else None
        await self.report()
        code = await c.proc.wait()
        if probing:
            probing.cancel()
        oom = False
        if self.runc is not None:
            oom = await self.runc.finish(c.name, c.directory / "run")
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, signal.SIGKILL)  # what the container left behind dies
        exit_code = 128 - code if code < 0 else code
        c.started = False
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": "OOMKilled" if oom else "Completed" if exit_code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now(),
            "containerID": c.container_id,
        }
        message = self._termination_message(c, message_file, exit_code)
        if message:
            terminated["message"] = message
        c.state = {"terminated": terminated}
        await self.report()
        return exit_code

    async def _runc_argv(self, c: Container, message_file: Path) -> tuple[list[str], Path]:
        """Container mode: the bundle of this run; the `runc run` argv and its directory."""
        assert self.runc is not None and c.prepared is not None
        # As the kubelet makes it: writable by the container's user.
        await asyncio.to_thread(message_file.chmod, 0o666)
        run_dir = c.directory / "run"
        return await self.runc.run_argv(c.spec, c.prepared, c.restarts, run_dir), run_dir

    def _workdir(self, c: Container) -> Path:
        workdir = c.spec.get("workingDir")
        if not workdir:
            return c.root
        if Path(workdir).is_dir():
            return Path(workdir)
        local = c.root / str(workdir).lstrip("/")
        local.mkdir(parents=True, exist_ok=True)
        return local

    def _termination_message(self, c: Container, path: Path, exit_code: int) -> str:
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace")[:4096]
            if text:
                return text
        if c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError" and exit_code:
            with contextlib.suppress(OSError):
                lines = c.log_path.read_text(errors="replace").splitlines()[-80:]
                return "\n".join(lines)[-2048:]
        return ""

    async def _startup_probe(self, c: Container, probe: dict[str, Any]) -> None:
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        failures = 0
        while c.running:
            if await probes.probe_once(c.spec, c.env, self._workdir(c), probe):
                c.started = True
                c.first_start.set()
                await self.report()
                return
            failures += 1
            if failures >= probe.get("failureThreshold", 3):
                await self._kill(c, grace=probe.get("terminationGracePeriodSeconds", 5))
                return
            await asyncio.sleep(probe.get("periodSeconds", 10))

    # -- stopping ------------------------------------------------------------------------
    async def _kill(self, c: Container, grace: float) -> None:
        proc = c.proc
        if proc is None or proc.returncode is not None:
            return
        await self._signal(c, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            await self._signal(c, signal.SIGKILL)
            await proc.wait()

    async def _signal(self, c: Container, sig: signal.Signals) -> None:
        if self.runc is not None:
            await self.runc.signal(c.name, sig)
        elif c.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, sig)

    async def stop(self, grace: float) -> None:
        """Kill every container (app containers first, sidecars last) and report the end."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._apps_done = True
        await asyncio.gather(
            *(self._kill(c, grace) for c in self.containers if c.kind != "sidecar")
        )
        for c in reversed([c for c in self.containers if c.kind == "sidecar"]):
            await self._kill(c, grace)
        await asyncio.wait({self.task}, timeout=5)
        self.task.cancel()
        for task in self._sidecars:
            task.cancel()
        if self.runc is not None:
            await self.runc.discard_all()
        if not self.terminal:
            ok = all(c.state.get("terminated", {}).get("exitCode") == 0 for c in self.containers)
            self.phase = "Succeeded" if ok and self.initialized else "Failed"
            with contextlib.suppress(ApiError):
                await self.report()

    # -- status --------------------------------------------------------------------------
    def _conditions(self) -> list[dict[str, Any]]:
        apps = [c for c in self.containers if c.kind == "app"]
        ready = not self.terminal and all(c.running and c.started for c in apps)
        mine = {
            "PodReadyToStartContainers": True,
            "Initialized": self.initialized,
            "ContainersReady": ready,
            "Ready": ready,
        }
        old = {c["type"]: c for c in self.pod.get("status", {}).get("conditions") or []}
        conditions = [c for t, c in old.items() if t not in mine]
        for kind, value in mine.items():
            status = "True" if value else "False"
            previous = old.get(kind) or {}
            changed = previous.get("status") != status
            conditions.append(
                {
                    "type": kind,
                    "status": status,
                    "lastProbeTime": None,
                    "lastTransitionTime": now() if changed else previous["lastTransitionTime"],
                }
            )
        return conditions

    async def report(self) -> None:
        """Write the pod's status as this runner sees it now (merge patch on pods/status)."""
        async with self._status_lock:
            if not self.terminal and self.initialized:
                # Running once every init container is done and an app container has started.
                apps = [c for c in self.containers if c.kind == "app"]
                if any(c.running or c.restarts or "terminated" in c.state for c in apps):
                    self.phase = "Running"
            status = {
                "phase": self.phase,
                "conditions": self._conditions(),
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "startTime": self.start_time,
                "initContainerStatuses": [c.status() for c in self.containers if c.kind != "app"],
                "containerStatuses": [c.status() for c in self.containers if c.kind == "app"],
            }
            await self._write_status(status)

    async def _write_status(self, status: dict[str, Any]) -> None:
        """Like a kubelet, keep trying while the API server is away (restarts, overload)."""
        delay = 0.5
        for _ in range(STATUS_ATTEMPTS):
            try:
                self.pod = await self.node.client.merge_patch(
                    self.path + "/status", {"status": status}
                )
            except ApiError as err:
                if err.status == 404:
                    return
                if err.status < 500 and err.status != 429:
                    raise
            except (OSError, aiohttp.ClientError):  # refused, reset, disconnected
                pass
            else:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
