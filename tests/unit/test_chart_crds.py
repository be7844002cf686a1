"""The chart's CRDs are the generated ones (`make crds` copies crds/ into the chart)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "crds"
CHART_CRDS = REPO / "charts" / "batchpredict" / "crds"


def test_chart_crds_equal_the_generated_crds() -> None:
    generated = {p.name: p.read_text() for p in GENERATED.glob("*.yaml")}
    # The chart also ships kopf's peering CRDs (kopf.dev_peerings.yaml); ours are batchpredict.io_*.
    copied = {p.name: p.read_text() for p in CHART_CRDS.glob("batchpredict.io_*.yaml")}
    assert generated, "crds/ is empty: run `make crds`"
    assert sorted(copied) == sorted(generated), "run `make crds` to refresh the chart's CRDs"
    stale = [name for name, text in generated.items() if copied[name] != text]
    assert not stale, f"charts/batchpredict/crds/{stale} differ from crds/: run `make crds`"
