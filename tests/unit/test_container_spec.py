"""What the node agent's container mode makes of a pod's container (tests.harness.oci): the
command, the user, the capabilities and the limits, as a kubelet + containerd would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness import oci

IMAGE = oci.Image(
    ref="example/batchpredict:1",
    rootfs=Path("/images/x/rootfs"),
    user="65532:65532",
    env=("PATH=/opt/batchpredict/bin:/usr/bin",),
    working_dir="/tmp",
    entrypoint=(),
    cmd=("batchpredict-operator",),
)
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        ({"name": "c"}, ["batchpredict-operator"]),
        ({"name": "c", "args": ["--help"]}, ["--help"]),
        ({"name": "c", "command": ["batchpredict-worker"]}, ["batchpredict-worker"]),
        ({"name": "c", "command": ["sh"], "args": ["-c", "x"]}, ["sh", "-c", "x"]),
    ],
)
def test_command_and_args_override_the_images_cmd_as_kubernetes_does(
    container: dict[str, Any], expected: list[str]
) -> None:
    assert oci.command(container, IMAGE) == expected


def test_a_container_with_no_command_anywhere_cannot_be_created() -> None:
    bare = oci.Image(ref="x", rootfs=Path("/r"))
    with pytest.raises(oci.ContainerConfigError, match="no command"):
        oci.command({"name": "c"}, bare)


def test_the_user_comes_from_the_container_then_the_pod_then_the_image() -> None:
    image_only = oci.security({}, {"name": "c"}, IMAGE)
    assert (image_only.uid, image_only.gid) == (65532, 65532)
    pod = {"securityContext": {"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 3000}}
    sec = oci.security(pod, {"name": "c"}, IMAGE)
    assert (sec.uid, sec.gid, sec.groups) == (1000, 2000, (3000,))
    sec = oci.security(pod, {"name": "c", "securityContext": {"runAsUser": 7}}, IMAGE)
    assert (sec.uid, sec.gid) == (7, 2000)


def test_run_as_non_root_with_user_0_is_refused() -> None:
    pod = {"securityContext": {"runAsNonRoot": True, "runAsUser": 0}}
    with pytest.raises(oci.ContainerConfigError, match="runAsNonRoot and image will run as root"):
        oci.security(pod, {"name": "c"}, IMAGE)
    root_image = oci.Image(ref="x", rootfs=Path("/r"), cmd=("true",))
    with pytest.raises(oci.ContainerConfigError):
        oci.security({"securityContext": {"runAsNonRoot": True}}, {"name": "c"}, root_image)


def test_restricted_drops_every_capability_and_sets_no_new_privs() -> None:
    sec = oci.security({}, {"name": "c", "securityContext": RESTRICTED}, IMAGE)
    assert sec.capabilities == ()
    assert sec.no_new_privileges and sec.read_only_root
    default = oci.security({}, {"name": "c"}, IMAGE)
    assert "CAP_NET_RAW" in default.capabilities and not default.no_new_privileges
    added = {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}
    assert oci.security({}, {"name": "c", "securityContext": added}, IMAGE).capabilities == (
        "CAP_NET_BIND_SERVICE",
    )


def test_limits_become_the_cgroup_memory_limit_and_cpu_quota() -> None:
    limits = {"resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}}
    resources = oci.resources(limits)
    assert resources["memory"] == {"limit": 64 * 2**20}
    assert resources["cpu"] == {"quota": 50_000, "period": 100_000}
    assert oci.quantity("1Gi") == 2**30 and oci.quantity("2") == 2
    with pytest.raises(oci.ContainerConfigError):
        oci.quantity("lots")


def test_the_spec_shares_the_host_network_and_mounts_volumes_read_only_when_asked() -> None:
    spec = oci.runtime_spec(
        argv=["batchpredict-worker", "plan"],
        env={"A": "1"},
        cwd="",
        hostname="p",
        rootfs=IMAGE.rootfs,
        sec=oci.security({}, {"name": "c", "securityContext": RESTRICTED}, IMAGE),
        mounts=[
            oci.Mount("/etc/cfg", Path("/v/cfg"), read_only=True),
            oci.Mount("/tmp", Path("/v/t")),
        ],
        container={"name": "c"},
        cgroups_path="/batchpredict/podx/c",
    )
    assert {n["type"] for n in spec["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount"}
    assert spec["root"] == {"path": str(IMAGE.rootfs), "readonly": True}
    assert spec["process"]["user"] == {"uid": 65532, "gid": 65532, "additionalGids": []}
    assert spec["process"]["cwd"] == "/" and spec["process"]["env"] == ["A=1"]
    binds = {m["destination"]: m["options"] for m in spec["mounts"] if m["type"] == "bind"}
    assert binds == {"/etc/cfg": ["rbind", "ro"], "/tmp": ["rbind", "rw"]}
