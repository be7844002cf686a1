"""Fixtures of the chart tier: `helm` (session), built by hack/helm/build.sh. The release that
serves a run end to end uses the session's `triton_server` (tests/conftest.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.chart.helm import Helm, HelmBuildError, build_helm
from tests.harness import images

_build_error: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Build helm before any test runs, so a cold build (minutes) is not under a test timeout."""
    here = Path(__file__).parent
    if not any(here in Path(str(item.path)).parents for item in items):
        return
    images.prebuild(config, items)  # test_containers.py needs the image
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        try:
            build_helm()
        except HelmBuildError as err:
            # The `helm` fixture reports it again, per test.
            _build_error.append(str(err))
            print(f"\nbuilding helm failed: {err}")


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    if _build_error:
        pytest.fail(_build_error[0], pytrace=False)
    try:
        binary = build_helm()
    except HelmBuildError as err:
        pytest.fail(str(err), pytrace=False)
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))
