"""The operator's own tenancy checks, with no admission policy in front of it: a run the
operator's policy refuses fails before anything is created, naming the field and the rule; and a
dataset row cannot make a worker pod read a file."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from tests.e2e.conftest import OperatorProcess, batch_prediction, wait_for_phase, write_items
from tests.harness.fixtures import Cluster
from tests.harness.triton_server import TritonHandle

TERMINAL = {"Succeeded", "PartiallySucceeded", "Failed"}


def test_a_host_path_volume_fails_the_run_before_any_pod(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    dataset = write_items(tmp_path / "items.jsonl", [1.0, 2.0])
    volumes = [{"name": "node", "hostPath": {"path": "/var/run"}}]
    bp = batch_prediction(
        "host-path", triton_server, dataset, tmp_path / "out", worker={"volumes": volumes}
    )
    cluster.apply(bp, namespace)
    status = wait_for_phase(
        cluster, name="host-path", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert status["phase"] == "Failed"
    assert (
        "refused by the operator's policy: spec.worker.volumes[0].hostPath: volume type hostPath "
        "is not allowed (operator policy allowedVolumeTypes:" in status["message"]
    )
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PolicyViolation"
    assert cluster.get("jobs", namespace=namespace)["items"] == [], "nothing may be created"
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=PolicyViolation"
    ).stdout
    assert "host-path" in events


def test_a_row_naming_a_file_does_not_make_the_worker_read_it(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Before, a row's `_uri` made the worker open any path or URL (the pod's token, a metadata
    endpoint). Here it names a readable image outside the dataset: the item fails without it."""
    private = tmp_path / "private"
    private.mkdir()
    Image.new("RGB", (8, 8), (200, 200, 200)).save(private / "token.png")
    dataset = tmp_path / "rows.jsonl"
    rows = [{"id": f"row-{n}", "_uri": str(private / "token.png")} for n in range(3)]
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "out"
    bp = batch_prediction(
        "uri-row",
        triton_server,
        dataset,
        output,
        model={"name": "image_mean", "inputs": [{"name": "image", "field": "$item"}]},
        input={
            "uri": str(dataset),
            "format": "jsonl",
            "idField": "id",
            "preprocess": {"image": {"scale": 1.0}},
        },
        shards=1,
        parallelism=1,
        retry={"maxRounds": 0},
    )
    cluster.apply(bp, namespace)
    status = wait_for_phase(
        cluster, name="uri-row", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert status["items"]["succeeded"] == 0, "a prediction would mean the file was read"
    assert status["items"]["failed"] == 3
    for item in status["failedItems"]:
        assert item["code"] == "MALFORMED_ITEM"
        assert "no image bytes" in item["message"]
    assert not list(output.rglob("predictions-*.jsonl")) or all(
        not path.read_text().strip() for path in output.rglob("predictions-*.jsonl")
    )
