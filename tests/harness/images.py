"""The image for the container mode: `images/build.sh` (`make images`) builds it, cached by the
content of its inputs, and links it into this checkout's local store, where the node agent's
runc mode finds it (tests.harness.runc).

- `image` (session fixture): the image built and loaded; its image.json (ref, size, build time).
  Skips on a cluster given by KUBECONFIG (kind): the local node agent is what runs the image.
- `label_runc(cluster, namespace, *labels)`: the pods of `namespace` run in containers.
- `prebuild(config, items)`: from a conftest's pytest_collection_modifyitems, builds the image
  before any test runs when one needs it, so a cold build (minutes) is under no test's timeout.
- `build()`: the same outside pytest (the demo); raises ImageBuildError.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness.fixtures import Cluster
from tests.harness.runc import RUNTIME_LABEL

REPO = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/batchpredict/batchpredict:0.1.0"


_built: list[Path] = []


def prebuild(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("KUBECONFIG") or _built or config.option.collectonly:
        return
    if not any("image" in getattr(item, "fixturenames", ()) for item in items):
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        build_image()


class ImageBuildError(RuntimeError):
    """images/build.sh failed; its output went to stderr."""


def build(python: str = sys.executable) -> Path:
    """images/build.sh (a relink when its inputs are cached); the image's directory."""
    if _built:
        return _built[0]
    env = {**os.environ, "PYTHON": python}
    result = subprocess.run(
        ["bash", str(REPO / "images" / "build.sh")],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise ImageBuildError(f"images/build.sh failed with exit code {result.returncode}")
    _built.append(Path(result.stdout.strip().splitlines()[-1]))
    return _built[0]


def build_image() -> Path:
    """`build` for tests: a failed build fails the test."""
    try:
        return build()
    except ImageBuildError as err:
        pytest.fail(f"{err} (its output is above)", pytrace=False)


@pytest.fixture(scope="session")
def image(cluster: Cluster) -> dict[str, Any]:
    if not cluster.local:
        pytest.skip("the container mode is the local node agent's (runc)")
    directory = build_image()
    return dict(json.loads((directory / "image.json").read_text()))


def label_runc(cluster: Cluster, namespace: str, *labels: str) -> None:
    cluster.kubectl(
        "label", "--overwrite", "namespace", namespace, f"{RUNTIME_LABEL}=runc", *labels
    )
