"""The demo tier installs the operator with the chart and runs the pods in containers from the
image: build helm and the image before any test runs, so that a cold build (minutes) is not
under a test's timeout (as tests/chart does)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.chart.helm import HelmBuildError, build_helm
from tests.harness import images
from tests.harness.images import image

__all__ = ["image"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    if not any(here in Path(str(item.path)).parents for item in items):
        return
    images.prebuild(config, items)
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        try:
            build_helm()
        except HelmBuildError as err:
            # The test reports it again when the demo calls helm.
            print(f"\nbuilding helm failed: {err}")
