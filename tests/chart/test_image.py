"""The image recipe agrees with the chart and the package (no engine is needed to check that;
`make images` builds it where Docker runs)."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from tests.chart.helm import CHART, REPO

pytestmark = pytest.mark.chart

DOCKERFILE = (REPO / "images" / "Dockerfile").read_text()


def test_base_is_a_pinned_slim_python_311_and_the_build_is_multi_stage() -> None:
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert stages == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    final = DOCKERFILE.split("\nFROM ${PYTHON_IMAGE}\n", 1)[1]
    # Only the virtualenv crosses over from the build stage; no sources, no wheels.
    assert re.findall(r"^COPY .*$", final, re.MULTILINE) == [
        "COPY --from=build /opt/batchpredict /opt/batchpredict"
    ]


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
    # Nothing installs packages at run time: pip and setuptools leave with the build.
    assert "pip uninstall -y pip setuptools wheel" in DOCKERFILE
