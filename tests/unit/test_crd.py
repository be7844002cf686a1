"""The committed CRD is what the models generate, and it is a structural schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from batchpredict.api.crd import build_crd, build_report_crd, crd_files, render

CRD_DIR = Path(__file__).parents[2] / "crds"


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema object with its path."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for name, sub in node.get("properties", {}).items():
            found += walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            found += walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += walk(node["additionalProperties"], f"{path}{{}}")
    return found


def schema() -> dict[str, Any]:
    crd = build_crd()
    result: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def test_committed_crds_are_in_sync_with_the_models() -> None:
    files = crd_files()
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == sorted(files)
    for name, crd in files.items():
        assert (CRD_DIR / name).read_text() == render(crd), f"run `make crds`: {name} drifted"


@pytest.mark.parametrize("crd", [build_crd(), build_report_crd()], ids=["bp", "shard"])
def test_schema_is_structural(crd: dict[str, Any]) -> None:
    for path, node in walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]):
        for forbidden in ("$ref", "$defs", "title", "anyOf", "allOf", "oneOf", "const"):
            assert forbidden not in node, f"{path} has {forbidden}"
        assert not isinstance(node.get("additionalProperties"), bool), path
        assert not isinstance(node.get("exclusiveMinimum"), int | float) or isinstance(
            node.get("exclusiveMinimum"), bool
        ), path
        opaque = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        )
        assert "type" in node or opaque, f"{path} has no type"


def test_every_spec_field_is_described_for_kubectl_explain() -> None:
    spec = schema()["properties"]["spec"]
    for name, node in spec["properties"].items():
        assert node.get("description"), f"spec.{name} has no description"


def test_defaults_reach_the_api_server_without_nulls() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    assert spec["parallelism"]["default"] == 4
    assert spec["batching"]["default"] == {}
    assert spec["retry"]["default"]["requestBackoff"]["initialSeconds"] == 0.2
    for path, node in walk(schema()):
        assert node.get("default", 0) is not None, path


def test_cel_rules_cover_cross_field_checks_and_immutability() -> None:
    spec = schema()["properties"]["spec"]
    rules = [r["rule"] for r in spec.get("x-kubernetes-validations", [])]
    assert "!(has(self.itemsPerShard) && has(self.shards))" in rules
    triton_rules = [r["rule"] for r in spec["properties"]["triton"]["x-kubernetes-validations"]]
    assert "has(self.url) != has(self.sidecar)" in triton_rules
    for field in ("model", "input", "output"):
        rules = spec["properties"][field]["x-kubernetes-validations"]
        (immutable,) = [r for r in rules if r["rule"] == "self == oldSelf"]
        assert f"spec.{field} cannot change" in immutable["message"]
    input_rules = spec["properties"]["input"]["x-kubernetes-validations"]
    assert any("byteRanges" in r["rule"] and "select.limit" in r["message"] for r in input_rules)


def test_printer_columns_and_names() -> None:
    version = build_crd()["spec"]["versions"][0]
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Model", "Phase", "Progress", "Succeeded", "Failed", "Started By", "Age"]
    wide = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority")]
    assert wide == ["Dataset", "Start", "End", "Items/s", "ETA", "Evaluation"]
    names = build_crd()["spec"]["names"]
    assert names["shortNames"] == ["bp"]
    assert names["categories"] == ["batchpredict"]
    assert version["subresources"] == {"status": {}}


def test_crd_files_are_valid_yaml() -> None:
    for path in CRD_DIR.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["kind"] == "CustomResourceDefinition"
