"""The image recipes agree with each other, with the chart and with the package: images/build.sh
(what `make images` runs, no Docker) and images/Dockerfile (for users with Docker) describe the
same image. No engine is needed to check that; tests/containers runs the built image."""

from __future__ import annotations

import re
import shlex
import tomllib

import pytest
import yaml

from tests.chart.helm import CHART, REPO

pytestmark = pytest.mark.chart

DOCKERFILE = (REPO / "images" / "Dockerfile").read_text()
BUILD_SH = (REPO / "images" / "build.sh").read_text()


def _umoci_config() -> list[str]:
    """The arguments of build.sh's `umoci config` call (its continuation lines joined)."""
    call = re.search(r"^umoci config (.*?[^\\])$", BUILD_SH, re.MULTILINE | re.DOTALL)
    assert call, "no umoci config in images/build.sh"
    return shlex.split(call.group(1).replace("\\\n", " "))


def _flags(name: str) -> list[str]:
    args = _umoci_config()
    return [args[i + 1] for i, arg in enumerate(args) if arg == name]


def test_both_recipes_install_the_same_pinned_debian_release_packages_and_pip() -> None:
    (suite,) = re.findall(r"^SUITE=(\S+)$", BUILD_SH, re.MULTILINE)
    (base,) = re.findall(r"^ARG DEBIAN_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert re.fullmatch(rf"debian:{suite}(-slim)?(@sha256:[0-9a-f]{{64}})?", base), base
    assert "--variant=minbase" in BUILD_SH
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert stages == ["${DEBIAN_IMAGE}", "${DEBIAN_IMAGE}"]
    packages = (REPO / "images" / "debian-packages.txt").read_text()
    pinned = [line for line in packages.splitlines() if line and not line.startswith("#")]
    assert pinned and all(re.fullmatch(r"[a-z0-9.+-]+=\S+", p) for p in pinned), pinned
    assert "images/debian-packages.txt" in BUILD_SH
    assert DOCKERFILE.count("COPY images/debian-packages.txt /tmp/") == 2
    (pip,) = re.findall(r"^PIP_VERSION=(\S+)$", BUILD_SH, re.MULTILINE)
    assert re.findall(r"^ARG PIP_VERSION=(\S+)$", DOCKERFILE, re.MULTILINE) == [pip]
    for recipe in (BUILD_SH, DOCKERFILE):
        # A virtualenv without pip; the wheels binary only, pinned by constraints.txt.
        assert "venv --without-pip /opt/batchpredict" in recipe
        assert "--only-binary=:all:" in recipe
        assert "constraints.txt" in recipe
        assert "[s3,gcs]" in recipe


def test_both_recipes_configure_the_same_user_env_workdir_and_command() -> None:
    final = DOCKERFILE.split("\nFROM ${DEBIAN_IMAGE}\n", 1)[1]
    # Only the virtualenv crosses over from the build stage; no sources, no wheels.
    assert re.findall(r"^COPY --from.*$", final, re.MULTILINE) == [
        "COPY --from=build /opt/batchpredict /opt/batchpredict"
    ]
    (user,) = re.findall(r"^USER (\S+)$", DOCKERFILE, re.MULTILINE)
    assert _flags("--config.user") == [user]
    (workdir,) = re.findall(r"^WORKDIR (\S+)$", final, re.MULTILINE)
    assert _flags("--config.workingdir") == [workdir]
    env_block = re.search(r"^ENV (.*?[^\\])$", final, re.MULTILINE | re.DOTALL)
    assert env_block
    dockerfile_env = shlex.split(env_block.group(1).replace("\\\n", " "))
    assert _flags("--config.env") == dockerfile_env
    assert re.findall(r"^CMD \[\"(\S+)\"\]$", final, re.MULTILINE) == _flags("--config.cmd")
    assert "ENTRYPOINT []" in final and "--clear=config.entrypoint" in _umoci_config()
    # The user has a passwd entry (kopf looks its name up), the same in both.
    useradd = re.findall(r"groupadd --gid 65532 .*? nonroot", DOCKERFILE)
    assert useradd and useradd == re.findall(r"groupadd --gid 65532 .*? nonroot", BUILD_SH)


def test_user_is_the_charts_numeric_non_root_user() -> None:
    (user,) = re.findall(r"^USER (\S+)$", DOCKERFILE, re.MULTILINE)
    uid, gid = (int(part) for part in user.split(":"))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pod = values["operator"]["podSecurityContext"]
    assert uid != 0 and (uid, gid) == (pod["runAsUser"], pod["runAsGroup"])


def test_both_entry_points_are_in_the_package_and_the_chart() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"batchpredict-operator", "batchpredict-worker"} <= set(scripts)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["worker"]["command"] == ["batchpredict-worker"]
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert 'command: ["batchpredict-operator"]' in deployment
    assert _flags("--config.cmd") == ["batchpredict-operator"]
