"""The node agent's container mode: each container of a pod runs with Debian's `runc`.

    pod namespace labelled  batchpredict.io/node-runtime=runc   (or BATCHPREDICT_NODE_RUNTIME=runc
    in the node agent's environment for every namespace without the label)

Images come from this checkout's local store, `.cluster/images/<ref>`, where `make images`
(images/build.sh) links each image it builds (no registry, no pulls: a missing image is
`ErrImageNeverPull`). Each run of a container gets a bundle under the pod's directory: an overlay
of the image's root filesystem (so writes never reach the image; `readOnlyRootFilesystem` makes
it read-only), the pod's volumes bind-mounted, and the OCI spec of tests.harness.oci. runc runs
it in the foreground (`runc run --keep`), so the agent waits on it as on any process; the kept
container's cgroup tells whether the kernel OOM-killed it before it is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import oci, podenv

RUNTIME_LABEL = "batchpredict.io/node-runtime"
RUNTIME_ENV = "BATCHPREDICT_NODE_RUNTIME"
RUNTIMES = ("process", "runc")
REPO = Path(__file__).resolve().parents[2]
IMAGE_STORE = REPO / ".cluster" / "images"
CGROUP_ROOT = Path("/sys/fs/cgroup")


class ImageError(RuntimeError):
    """The pod's image is not in the node's store (the kubelet's ErrImageNeverPull)."""

    reason = "ErrImageNeverPull"


def runtime_for(namespace: dict[str, Any]) -> str:
    """`runc` or `process` for pods of `namespace` (its label, else the agent's default)."""
    chosen = (namespace.get("metadata", {}).get("labels") or {}).get(RUNTIME_LABEL) or (
        os.environ.get(RUNTIME_ENV) or "process"
    )
    return chosen if chosen in RUNTIMES else "process"


def find_image(ref: str, store: Path = IMAGE_STORE) -> oci.Image:
    # A ref without a registry or tag is looked up as written; no "latest" guessing.
    directory = store / oci.store_key(ref)
    if not (directory / "config.json").is_file():
        raise ImageError(
            f'image "{ref}" is not present on the node (this checkout\'s store is {store}; '
            "`make images` builds and loads ghcr.io/batchpredict/batchpredict)"
        )
    return oci.Image.load(ref, directory.resolve())


@dataclass(frozen=True)
class Prepared:
    """What every run of one container uses: its image, environment, security and mounts."""

    image: oci.Image
    env: dict[str, str]
    security: oci.Security
    mounts: list[oci.Mount]


class RuncPod:
    """The runc side of one pod: bundles, runs, signals and cgroups of its containers."""

    def __init__(self, state_dir: Path, pod: dict[str, Any], directory: Path) -> None:
        self.pod = pod
        self.uid = pod["metadata"]["uid"]
        self.root = state_dir / "runc"
        self.directory = directory
        self.cgroup_parent = f"/batchpredict/pod{self.uid}"
        self.ids: dict[str, str] = {}  # container name -> id of its current run
        self.run_dirs: dict[str, Path] = {}  # container name -> bundle of its current run

    async def prepare(
        self,
        spec: dict[str, Any],
        volumes: dict[str, Path],
        objects: podenv.ObjectCache,
        node_env: dict[str, str],
        root: Path,
    ) -> Prepared:
        """Container `spec` before its first run (`root`: its directory of files for the pod)."""
        image = find_image(spec.get("image", ""))
        name = self.pod["metadata"]["name"]
        # The image's environment, then the service variables, then the container's own.
        base = dict(e.split("=", 1) for e in image.env)
        base |= {k: v for k, v in node_env.items() if k.startswith("KUBERNETES_")}
        base["HOSTNAME"] = name
        env = await podenv.container_env(self.pod, spec, base, objects)
        security = oci.security(self.pod["spec"], spec, image)
        message = spec.get("terminationMessagePath", "/dev/termination-log")
        extra = [
            *etc_files(self.directory / "etc", name),
            oci.Mount(message, root / message.lstrip("/")),
        ]
        return Prepared(image, env, security, container_mounts(self.pod, spec, volumes, extra))

    async def run_argv(
        self, spec: dict[str, Any], prepared: Prepared, restarts: int, run_dir: Path
    ) -> list[str]:
        """The bundle of run `restarts` of container `spec`; the `runc run` argv."""
        image = prepared.image
        argv = [podenv.expand(a, prepared.env) for a in oci.command(spec, image)]
        runtime_spec = oci.runtime_spec(
            argv=argv,
            env=prepared.env,
            cwd=spec.get("workingDir") or image.working_dir,
            hostname=self.pod["metadata"]["name"],
            rootfs=image.rootfs,
            sec=prepared.security,
            mounts=prepared.mounts,
            container=spec,
            cgroups_path=self.cgroups_path(spec["name"], restarts),
        )
        return await self.create(spec["name"], restarts, runtime_spec, run_dir)

    # -- one run -----------------------------------------------------------------------------
    async def create(
        self,
        name: str,
        restarts: int,
        spec: dict[str, Any],
        run_dir: Path,
    ) -> list[str]:
        """Make the bundle of run `restarts` of container `name`; the `runc run` argv."""
        cid = f"{self.uid[:8]}-{name}-{restarts}"
        self.ids[name], self.run_dirs[name] = cid, run_dir
        await self._discard(cid, run_dir)
        bundle = run_dir
        for sub in ("rootfs", "upper", "work"):
            (bundle / sub).mkdir(parents=True, exist_ok=True)
        lower = spec["root"]["path"]
        options = f"lowerdir={lower},upperdir={bundle / 'upper'},workdir={bundle / 'work'}"
        await _check("mount", "-t", "overlay", "overlay", "-o", options, str(bundle / "rootfs"))
        spec = {**spec, "root": {**spec["root"], "path": "rootfs"}}
        (bundle / "config.json").write_text(json.dumps(spec, indent=1))
        return ["runc", "--root", str(self.root), "run", "--keep", "--bundle", str(bundle), cid]

    async def finish(self, name: str, run_dir: Path) -> bool:
        """After `runc run` returned: whether the kernel OOM-killed the container; cleans up."""
        cid = self.ids[name]
        oom = False
        with contextlib.suppress(OSError, ValueError):
            control = self._cgroup("memory", cid) / "memory.oom_control"
            for line in control.read_text().splitlines():
                key, _, value = line.partition(" ")
                oom = oom or (key == "oom_kill" and int(value) > 0)
        await self._discard(cid, run_dir)
        return oom

    async def discard_all(self) -> None:
        """Whatever runs of this pod are left (the pod stopped mid-way): gone."""
        for name, cid in self.ids.items():
            await self._discard(cid, self.run_dirs[name])
        self.remove_cgroups()

    async def _discard(self, cid: str, run_dir: Path) -> None:
        await _run("runc", "--root", str(self.root), "delete", "--force", cid)
        if (run_dir / "rootfs").is_mount():
            await _run("umount", "-l", str(run_dir / "rootfs"))
        await asyncio.to_thread(shutil.rmtree, run_dir, True)

    async def signal(self, name: str, sig: signal.Signals) -> None:
        """Send `sig` to every process of container `name`'s current run."""
        if name in self.ids:
            await _run("runc", "--root", str(self.root), "kill", "--all", self.ids[name], sig.name)

    def _cgroup(self, controller: str, cid: str) -> Path:
        return CGROUP_ROOT / controller / self.cgroup_parent.lstrip("/") / cid

    def cgroups_path(self, name: str, restarts: int) -> str:
        return f"{self.cgroup_parent}/{self.uid[:8]}-{name}-{restarts}"

    def remove_cgroups(self) -> None:
        """The pod's cgroup directories, once all its containers are gone."""
        for controller in CGROUP_ROOT.iterdir():
            pod_dir = controller / self.cgroup_parent.lstrip("/")
            if pod_dir.is_dir():
                for path in sorted(pod_dir.glob("**/"), key=lambda p: -len(p.parts)):
                    with contextlib.suppress(OSError):
                        path.rmdir()


def container_mounts(
    pod: dict[str, Any], container: dict[str, Any], volumes: dict[str, Path], extra: list[oci.Mount]
) -> list[oci.Mount]:
    """Bind mounts of the container's volumeMounts (and `extra` files), as the kubelet makes."""
    kinds = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    mounts = list(extra)
    for mount in container.get("volumeMounts") or []:
        source = volumes[mount["name"]]
        if "emptyDir" in kinds.get(mount["name"], {}):
            source.chmod(0o777)  # as the kubelet makes emptyDirs: writable by any user
        if mount.get("subPath"):
            source = source / mount["subPath"]
            source.mkdir(parents=True, exist_ok=True)
        mounts.append(oci.Mount(mount["mountPath"], source, bool(mount.get("readOnly"))))
    return mounts


def etc_files(directory: Path, hostname: str) -> list[oci.Mount]:
    """/etc/hosts, /etc/hostname and /etc/resolv.conf of a hostNetwork pod."""
    directory.mkdir(parents=True, exist_ok=True)
    hosts = directory / "hosts"
    hosts.write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.0.1\t{hostname}\n")
    name = directory / "hostname"
    name.write_text(hostname + "\n")
    resolv = directory / "resolv.conf"
    host_resolv = Path("/etc/resolv.conf")
    resolv.write_text(host_resolv.read_text() if host_resolv.exists() else "")
    return [
        oci.Mount("/etc/hosts", hosts),
        oci.Mount("/etc/hostname", name),
        oci.Mount("/etc/resolv.conf", resolv),
    ]


async def _run(*argv: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await proc.wait()


async def _check(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise OSError(f"{' '.join(argv[:3])} failed: {out.decode(errors='replace').strip()}")
