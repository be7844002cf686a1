"""Running the project's helm (hack/helm/build.sh) on the chart, and reading what it renders."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "batchpredict"
BUILD_SCRIPT = REPO / "hack" / "helm" / "build.sh"
FULL_VALUES = Path(__file__).with_name("values-full.yaml")


class HelmBuildError(RuntimeError):
    """hack/helm/build.sh failed; the message has the tail of its log."""


def build_helm() -> str:
    """Path of the helm binary, built from the Go module proxy on first use (then cached)."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False, timeout=3600
    )
    if result.returncode != 0:
        raise HelmBuildError(f"{BUILD_SCRIPT} failed ({result.returncode}): {result.stderr}")
    return result.stdout.strip().splitlines()[-1]


@dataclass(frozen=True)
class Helm:
    binary: str
    # Helm keeps its caches and config under HOME by default; tests keep them in a temp dir.
    home: Path

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        base = dict(env if env is not None else os.environ)
        base |= {
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        result = subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            env=base,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def template(
        self,
        *values_files: Path,
        release: str = "batchpredict",
        namespace: str = "batchpredict-system",
        sets: Mapping[str, str] | None = None,
        api_versions: tuple[str, ...] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """`helm template`; `api_versions` are APIs (group/version[/Kind]) the cluster serves
        beyond the built-in ones (helm assumes only those without a cluster)."""
        args = ["template", release, str(CHART), "--namespace", namespace]
        for api in api_versions:
            args += ["--api-versions", api]
        for path in values_files:
            args += ["--values", str(path)]
        for key, value in (sets or {}).items():
            args += ["--set-json", f"{key}={value}"]
        return self.run(*args, check=check)

    def render(self, *values_files: Path, **kwargs: Any) -> list[dict[str, Any]]:
        """The rendered objects (templates only, CRDs not included)."""
        return parse(self.template(*values_files, **kwargs).stdout)


def parse(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]
