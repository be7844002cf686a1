"""What a container runtime makes of a pod's container: the OCI runtime spec (pure functions).

The node agent's container mode (tests.harness.runc) runs each container with Debian's `runc`
from an image's root filesystem. This module decides everything about that run from the pod,
the container and the image, as a kubelet + containerd would:

- the command: `command`/`args` over the image's Entrypoint/Cmd (Kubernetes' rules);
- user and groups: the container's securityContext over the pod's over the image's `User`;
  `runAsNonRoot` with user 0 is refused before the container starts (CreateContainerConfigError);
- the root filesystem read-only with `readOnlyRootFilesystem`;
- capabilities: the container runtime's default set, minus `drop` (`ALL`), plus `add`;
  `allowPrivilegeEscalation: false` sets no_new_privs;
- limits: memory and CPU limits on the container's cgroup;
- volumes: bind mounts at each volumeMount's path (read-only when asked);
- the network: the host's (every pod is hostNetwork here), so pods reach loopback services.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# containerd's default capability set for containers (what `drop: [ALL]` removes).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


class ContainerConfigError(RuntimeError):
    """The container cannot be created as asked (the kubelet's CreateContainerConfigError)."""

    reason = "CreateContainerConfigError"


@dataclass(frozen=True)
class Image:
    """An image in the node's store: its root filesystem and its OCI config."""

    ref: str
    rootfs: Path
    user: str = ""
    env: tuple[str, ...] = ()
    working_dir: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()

    @classmethod
    def load(cls, ref: str, directory: Path) -> Image:
        """The image images/build.sh left in `directory` (config.json, rootfs/)."""
        config = json.loads((directory / "config.json").read_text()).get("config") or {}
        return cls(
            ref=ref,
            rootfs=directory / "rootfs",
            user=config.get("User", ""),
            env=tuple(config.get("Env") or ()),
            working_dir=config.get("WorkingDir", ""),
            entrypoint=tuple(config.get("Entrypoint") or ()),
            cmd=tuple(config.get("Cmd") or ()),
        )


def store_key(ref: str) -> str:
    """The file name under which images/build.sh links `ref` into the local store."""
    return ref.replace("/", "_").replace(":", "_")


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity ("512Mi", "500m", "2") as a number."""
    match = _QUANTITY.match(str(text))
    if not match or match.group(2) not in _SUFFIX:
        raise ContainerConfigError(f"invalid quantity {text!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def command(container: dict[str, Any], image: Image) -> list[str]:
    """Kubernetes' rules: `command` replaces Entrypoint (and Cmd); `args` replaces Cmd."""
    if container.get("command"):
        argv = [*container["command"], *(container.get("args") or [])]
    else:
        argv = [*image.entrypoint, *(container.get("args") or image.cmd)]
    if not argv:
        raise ContainerConfigError(f"no command specified for {container['name']!r}")
    return argv


@dataclass(frozen=True)
class Security:
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    read_only_root: bool = False
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    no_new_privileges: bool = False


def security(pod_spec: dict[str, Any], container: dict[str, Any], image: Image) -> Security:
    """The container's effective security settings; refuses runAsNonRoot with user 0."""
    pod_ctx = pod_spec.get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    image_user, _, image_group = image.user.partition(":")
    if image_user and not image_user.isdigit():
        raise ContainerConfigError(f"image user {image_user!r} is not numeric")
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser", int(image_user or 0)))
    gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup", int(image_group or 0)))
    non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot", False))
    if non_root and uid == 0:
        raise ContainerConfigError(
            "container has runAsNonRoot and image will run as root "
            f"(pod: {pod_spec.get('nodeName', '')}, container: {container['name']})"
        )
    groups = [*pod_ctx.get("supplementalGroups", [])]
    if "fsGroup" in pod_ctx:
        groups.append(pod_ctx["fsGroup"])
    caps = ctx.get("capabilities") or {}
    dropped = {_cap(c) for c in caps.get("drop") or []}
    kept = [] if "CAP_ALL" in dropped else [c for c in DEFAULT_CAPABILITIES if c not in dropped]
    kept += [_cap(c) for c in caps.get("add") or [] if _cap(c) not in kept]
    return Security(
        uid=int(uid),
        gid=int(gid),
        groups=tuple(int(g) for g in groups),
        read_only_root=bool(ctx.get("readOnlyRootFilesystem", False)),
        capabilities=tuple(kept),
        # Kubernetes' default is allowPrivilegeEscalation true, i.e. no_new_privs off.
        no_new_privileges=ctx.get("allowPrivilegeEscalation") is False,
    )


def _cap(name: str) -> str:
    name = name.upper()
    return name if name.startswith("CAP_") else f"CAP_{name}"


@dataclass(frozen=True)
class Mount:
    destination: str
    source: Path
    read_only: bool = False
    options: tuple[str, ...] = field(default=())


def resources(container: dict[str, Any]) -> dict[str, Any]:
    """The OCI `linux.resources` of the container's limits (memory, CPU)."""
    limits = (container.get("resources") or {}).get("limits") or {}
    out: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if "memory" in limits:
        out["memory"] = {"limit": int(quantity(limits["memory"]))}
    if "cpu" in limits:
        period = 100_000
        out["cpu"] = {"quota": max(1000, int(quantity(limits["cpu"]) * period)), "period": period}
    return out


def runtime_spec(
    *,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    hostname: str,
    rootfs: Path,
    sec: Security,
    mounts: list[Mount],
    container: dict[str, Any],
    cgroups_path: str,
) -> dict[str, Any]:
    """The OCI runtime spec (config.json) of one container run."""
    caps = list(sec.capabilities)
    base_mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]
    for m in mounts:
        options = ["rbind", "ro" if m.read_only else "rw", *m.options]
        base_mounts.append(
            {
                "destination": m.destination,
                "type": "bind",
                "source": str(m.source),
                "options": options,
            }
        )
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": sec.uid, "gid": sec.gid, "additionalGids": list(sec.groups)},
            "args": argv,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": cwd or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": sec.no_new_privileges,
        },
        "root": {"path": str(rootfs), "readonly": sec.read_only_root},
        "hostname": hostname[:63],
        "mounts": base_mounts,
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": resources(container),
            # No network namespace: the host's network, as a hostNetwork pod (loopback services).
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
