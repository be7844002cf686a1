"""`batchpredict validate` and `batchpredict crds`, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from batchpredict.console.pools import format_pools

REPO = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "batchpredict.console.main"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, check=False)


def test_validate_accepts_the_examples() -> None:
    result = run("validate", *map(str, sorted((REPO / "examples").glob("*.yaml"))))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "minimal.yaml: nightly-scoring: OK" in result.stdout


def test_validate_names_every_bad_field(tmp_path: Path) -> None:
    body = yaml.safe_load((REPO / "examples" / "minimal.yaml").read_text())
    body["spec"]["batching"] = {"batchSize": 0}
    body["spec"]["input"]["format"] = "xml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(body))
    result = run("validate", str(bad))
    assert result.returncode == 1
    assert (
        "nightly-scoring: spec.batching.batchSize: Input should be greater than or equal to 1"
        in result.stdout
    )
    assert "nightly-scoring: spec.input.format: Input should be 'jsonl'" in result.stdout


def test_validate_reports_an_unreadable_file(tmp_path: Path) -> None:
    result = run("validate", str(tmp_path / "missing.yaml"))
    assert result.returncode == 1
    assert "missing.yaml: cannot read" in result.stdout


def test_crds_prints_what_is_committed() -> None:
    printed = list(yaml.safe_load_all(run("crds").stdout))
    committed = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]
    assert printed == committed


def test_node_pools_table() -> None:
    table = format_pools(
        {
            "gpu-a100": {
                "description": "A100 80GB",
                "nodeSelector": {"pool": "gpu"},
                "resources": {"limits": {"nvidia.com/gpu": 1}},
            },
            "cpu": {},
        }
    ).splitlines()
    assert table[0].split() == ["NAME", "GPU", "NODE", "SELECTOR", "DESCRIPTION"]
    assert table[1].split() == ["cpu", "-", "-"]
    assert table[2].split() == ["gpu-a100", "1", "nvidia.com/gpu", "pool=gpu", "A100", "80GB"]
    assert "no node pools are defined" in format_pools({})
