"""The v1alpha1 models: examples parse, defaults apply, invalid specs name their field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchpredict.api.v1alpha1 import BatchPrediction
from batchpredict.api.v1alpha1.serving import TritonProtocol
from batchpredict.api.validation import InvalidSpecError, parse_batch_prediction, parse_spec

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))

VALID: dict[str, Any] = {
    "model": {"name": "echo"},
    "triton": {"url": "localhost:8001"},
    "input": {"uri": "/data/items.jsonl", "format": "jsonl"},
    "output": {"uri": "/data/out/"},
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """VALID with one dotted path set (None deletes it)."""
    spec = copy.deepcopy(VALID)
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return spec


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_parses(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "BatchPrediction":
            bp = parse_batch_prediction(doc)
            assert bp.spec.model.name


def test_defaults_are_sensible() -> None:
    spec = parse_spec(VALID)
    assert spec.parallelism == 4
    assert spec.retry.max_rounds == 3
    assert spec.retry.backoff.initial_seconds == 30
    assert spec.retry.request_backoff.initial_seconds == pytest.approx(0.2)
    assert spec.output.format == "jsonl"
    assert spec.stall_timeout_seconds == 600
    assert spec.suspend is False


def test_protocol_follows_the_url_scheme() -> None:
    assert parse_spec(VALID).triton.resolved_protocol() is TritonProtocol.GRPC
    http = parse_spec(with_change("triton.url", "http://triton:8000"))
    assert http.triton.resolved_protocol() is TritonProtocol.HTTP


def test_wire_form_round_trips_in_camel_case() -> None:
    spec = parse_spec(with_change("input.idField", "uid"))
    wire = spec.to_wire()
    assert wire["input"]["idField"] == "uid"
    assert wire["retry"]["shardBackoffLimit"] == 2
    assert parse_spec(wire) == spec


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("batching.batchSize", 0, "spec.batching.batchSize: Input should be greater than or equal"),
        ("parallelism", -1, "spec.parallelism: Input should be greater than or equal to 1"),
        ("input.format", "xml", "spec.input.format: Input should be 'jsonl', 'csv'"),
        ("model.name", None, "spec.model.name: Field required"),
        ("model.name", "bad name!", "spec.model.name: String should match pattern"),
        (
            "triton.sidecar",
            {"image": "t", "modelRepository": "s3://m"},
            "exactly one of triton.url",
        ),
        ("triton.url", None, "set exactly one of triton.url"),
        ("shards", 8, None),  # valid alone; combined below
        ("retry.backoff", {"initialSeconds": 60, "maxSeconds": 5}, "backoff.maxSeconds must be"),
        ("failurePolicy.maxFailedPercent", 150, "spec.failurePolicy.maxFailedPercent"),
        ("input.preprocess", {"function": "not a function"}, "spec.input.preprocess.function"),
        ("output.formt", "jsonl", "spec.output.formt: unknown field"),
        ("worker.nodePool", "GPU_Pool", "spec.worker.nodePool: String should match pattern"),
    ],
)
def test_invalid_spec_names_the_field(path: str, value: Any, expected: str | None) -> None:
    spec = with_change(path, value)
    if expected is None:
        parse_spec(spec)
        return
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(spec)
    assert expected in str(caught.value), str(caught.value)


def test_items_per_shard_and_shards_exclude_each_other() -> None:
    spec = with_change("shards", 8)
    spec["itemsPerShard"] = 100
    with pytest.raises(InvalidSpecError, match="at most one of itemsPerShard and shards"):
        parse_spec(spec)


def test_every_problem_is_reported_at_once() -> None:
    spec = with_change("parallelism", 0)
    spec["batching"] = {"batchSize": 0}
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(spec)
    assert len(caught.value.problems) == 2


def test_models_are_immutable() -> None:
    bp = BatchPrediction.model_validate({"spec": VALID})
    with pytest.raises(ValueError, match="frozen"):
        bp.spec.parallelism = 3  # type: ignore[misc]
