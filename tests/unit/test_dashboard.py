"""The dashboard without a cluster: what its views compute from objects, what it reads from a
run's outputs, and what its server refuses (no cluster: the API server is never reached)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes_asyncio import client
from PIL import Image

from batchpredict.dashboard import outputs
from batchpredict.dashboard.feed import RunFeed
from batchpredict.dashboard.kube import Kube
from batchpredict.dashboard.server import ACTION_HEADER, LOOPBACK_NAMES, build_app
from batchpredict.dashboard.views import plain_condition, rounds, run_detail, run_row, template
from batchpredict.io.layout import OutputLayout

NOW = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)


def bp(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batchpredict.io/v1alpha1",
        "kind": "BatchPrediction",
        "metadata": {
            "name": "nightly",
            "namespace": "team-a",
            "uid": "u1",
            "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T12:00:00Z",
        },
        "spec": {
            "model": {"name": "resnet", "version": "3"},
            "triton": {"url": "triton:8001"},
            "input": {"uri": "s3://b/images/", "format": "files"},
            "output": {"uri": "s3://b/out/"},
            "parallelism": 4,
        },
        "status": status,
    }


def test_a_row_has_the_columns_of_the_table() -> None:
    row = run_row(
        bp(
            phase="Running",
            startedBy="alice",
            startTime="2026-01-01T12:00:00Z",
            items={"total": 200, "succeeded": 90, "failed": 10, "retrying": 4},
            itemsPerSecond=12.5,
            eta="8s",
        ),
        NOW,
    )
    assert row["model"] == "resnet:3"
    assert row["dataset"] == "s3://b/images/"
    assert row["startedBy"] == "alice"
    # Items waiting for a retry round are not done.
    assert row["percent"] == 48.0
    assert row["durationSeconds"] == 30
    assert not row["finished"]
    assert (row["itemsPerSecond"], row["eta"]) == (12.5, "8s")


def test_a_finished_run_is_done_and_its_duration_stops() -> None:
    row = run_row(
        bp(
            phase="PartiallySucceeded",
            startTime="2026-01-01T12:00:00Z",
            completionTime="2026-01-01T12:00:10Z",
            items={"total": 10, "succeeded": 9, "failed": 1},
        ),
        NOW,
    )
    assert row["finished"]
    assert row["percent"] == 100.0
    assert row["durationSeconds"] == 10


def test_a_new_run_has_no_percent_and_is_pending() -> None:
    row = run_row(bp(), NOW)
    assert (row["phase"], row["percent"]) == ("Pending", None)


@pytest.mark.parametrize(
    ("kind", "state", "words", "tone"),
    [
        ("ModelReady", "False", "The model is not ready.", "bad"),
        ("Stalled", "True", "The run is stalled", "bad"),
        ("Stalled", "False", "not stalled", "good"),
        ("Complete", "True", "The run has finished.", "good"),
        ("Progressing", "False", "not making progress", "neutral"),
        ("Custom", "True", "Custom is True.", "good"),
    ],
)
def test_conditions_read_as_sentences(kind: str, state: str, words: str, tone: str) -> None:
    shown = plain_condition(
        {"type": kind, "status": state, "reason": "R", "message": "m", "lastTransitionTime": "t"}
    )
    assert words in shown["sentence"]
    assert (shown["tone"], shown["reason"], shown["message"], shown["since"]) == (
        tone,
        "R",
        "m",
        "t",
    )


def test_rounds_show_each_job_with_its_shard_reports() -> None:
    status = {"jobs": [{"name": "j-r0", "round": 0}, {"name": "j-r1", "round": 1}]}
    jobs = [{"metadata": {"name": "j-r0"}, "spec": {"completions": 2}, "status": {"succeeded": 2}}]
    reports = [
        {"spec": {"round": 0, "shard": 1}, "progress": {"itemsTotal": 10, "succeeded": 5}},
        {
            "spec": {"round": 0, "shard": 0},
            "progress": {"itemsTotal": 10, "succeeded": 10, "finished": True},
        },
        {"spec": {"round": 1, "shard": 0}, "progress": {"itemsTotal": 4, "failed": 1}},
    ]
    shown = rounds(status, jobs, reports)
    assert [r["round"] for r in shown] == [0, 1]
    assert [s["shard"] for s in shown[0]["shards"]] == [0, 1]
    assert [s["percent"] for s in shown[0]["shards"]] == [100.0, 50.0]
    assert shown[0]["completions"] == 2
    assert shown[1]["shards"][0]["failed"] == 1


def test_the_run_page_detail_sorts_events_and_marks_image_datasets() -> None:
    detail = run_detail(
        bp(phase="Running"),
        jobs=[],
        pods=[
            {
                "metadata": {
                    "name": "p1",
                    "labels": {"batchpredict.io/role": "shards", "batchpredict.io/round": "0"},
                    "annotations": {"batch.kubernetes.io/job-completion-index": "3"},
                },
                "spec": {"containers": [{"name": "worker"}]},
                "status": {"phase": "Running"},
            }
        ],
        reports=[],
        events=[
            {"reason": "Pending", "lastTimestamp": "2026-01-01T12:00:00Z"},
            {"reason": "Running", "lastTimestamp": "2026-01-01T12:00:05Z"},
        ],
    )
    assert [e["reason"] for e in detail["events"]] == ["Running", "Pending"]
    assert detail["pods"][0]["shard"] == "3"
    assert detail["pods"][0]["containers"] == ["worker"]
    assert detail["images"] is True
    assert ("Model", "resnet:3") in detail["summary"]


def test_a_copy_keeps_the_spec_and_drops_what_the_server_set() -> None:
    copy = template(bp(phase="Succeeded"))
    assert copy["metadata"] == {"name": "nightly-copy"}
    assert "status" not in copy
    assert copy["spec"]["model"] == {"name": "resnet", "version": "3"}


# --- outputs ----------------------------------------------------------------------------------
def _run_outputs(root: Path, rows: int) -> str:
    layout = OutputLayout(str(root))
    (root / "plan.json").write_text(json.dumps({"total": rows, "shards": 1}))
    chunk = Path(layout.predictions_chunk(0, 0, 0, "jsonl"))
    chunk.parent.mkdir(parents=True, exist_ok=True)
    chunk.write_text(
        "".join(json.dumps({"id": f"i{n}", "y": [n, n * 2]}) + "\n" for n in range(rows))
    )
    return str(root)


def test_results_are_paged_with_their_columns(tmp_path: Path) -> None:
    uri = _run_outputs(tmp_path, 45)
    first = outputs.results_page(uri, 0, 20)
    assert [r["id"] for r in first["rows"]][:2] == ["i0", "i1"]
    assert first["columns"] == ["id", "y"]
    assert first["rows"][1]["y"] == "[1, 2]"
    assert first["more"] and not first["finished"]
    last = outputs.results_page(uri, 40, 20)
    assert [r["id"] for r in last["rows"]] == [f"i{n}" for n in range(40, 45)]
    assert not last["more"]


def test_results_of_a_run_that_has_not_planned_say_so(tmp_path: Path) -> None:
    page = outputs.results_page(str(tmp_path), 0, 20)
    assert page["rows"] == []
    assert "no plan.json" in page["note"]


def test_downloads_are_jsonl_whatever_was_written(tmp_path: Path) -> None:
    uri = _run_outputs(tmp_path, 3)
    lines = b"".join(outputs.download_lines(uri, "predictions")).decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["i0", "i1", "i2"]


def test_a_thumbnail_is_a_small_png_of_an_image_of_the_dataset(tmp_path: Path) -> None:
    (tmp_path / "images" / "cats").mkdir(parents=True)
    Image.new("RGB", (640, 320), "red").save(tmp_path / "images" / "cats" / "a.jpg")
    png = outputs.thumbnail(str(tmp_path / "images"), "cats/a.jpg")
    with Image.open(io.BytesIO(png)) as small:
        assert small.format == "PNG"
        assert max(small.size) == outputs.THUMBNAIL_PIXELS
    # Glob datasets: ids are relative to the glob's fixed prefix.
    assert outputs.thumbnail(str(tmp_path / "images" / "*" / "*.jpg"), "cats/a.jpg") == png


@pytest.mark.parametrize("item", ["../secret.png", "/etc/x.png", "cats/../../x.png", "notes.txt"])
def test_a_thumbnail_names_only_images_below_the_dataset(tmp_path: Path, item: str) -> None:
    with pytest.raises(ValueError, match="is not an image of this dataset"):
        outputs.thumbnail(str(tmp_path), item)


# --- the server -------------------------------------------------------------------------------
async def _client(read_only: bool) -> TestClient[Any, Any]:
    # An API client that points nowhere reachable: these requests never need the cluster.
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"
    kube = Kube(client.ApiClient(configuration))
    app = build_app(kube, RunFeed(kube, "team-a", "team-a"), read_only, LOOPBACK_NAMES)
    test_client: TestClient[Any, Any] = TestClient(TestServer(app))
    await test_client.start_server()
    return test_client


@pytest.fixture
async def local() -> AsyncIterator[TestClient[Any, Any]]:
    served = await _client(read_only=False)
    yield served
    await served.close()


@pytest.fixture
async def read_only() -> AsyncIterator[TestClient[Any, Any]]:
    served = await _client(read_only=True)
    yield served
    await served.close()


async def test_pages_and_assets_come_from_the_package_with_a_strict_policy(
    local: TestClient[Any, Any],
) -> None:
    for path, kind in [
        ("/", "text/html"),
        ("/runs/a/b", "text/html"),
        ("/static/runs.js", "text/javascript"),
    ]:
        response = await local.get(path)
        assert response.status == 200
        assert response.content_type == kind
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    for missing in ["/static/nope.js", "/static/..%2Fserver.py", "/static/server.py"]:
        assert (await local.get(missing)).status == 404


def test_no_asset_loads_anything_from_another_site() -> None:
    """No CDN: pages and scripts name only this server's paths (the CSP enforces it too)."""
    static = resources.files("batchpredict.dashboard") / "static"
    names = [p.name for p in static.iterdir()]
    assert {"index.html", "run.html", "app.css", "common.js", "runs.js", "run.js"} <= set(names)
    for name in names:
        text = (static / name).read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), name
        assert not re.search(r"url\((https?:)?//|@import|fetch\(\"https?:", text), name


async def test_an_action_without_the_page_header_is_refused(local: TestClient[Any, Any]) -> None:
    # What a form on another site could send: no custom header (that would need CORS).
    response = await local.post("/api/runs/team-a/nightly/actions/cancel")
    assert response.status == 403
    assert ACTION_HEADER in (await response.json())["error"]


async def test_the_read_only_mode_refuses_every_action_with_its_reason(
    read_only: TestClient[Any, Any],
) -> None:
    for path in ["/api/runs/team-a/nightly/actions/retry", "/api/runs/team-a?dryRun=true"]:
        response = await read_only.post(path, headers={ACTION_HEADER: "1"})
        assert response.status == 403
        assert "read-only" in (await response.json())["error"]
    config = await (await read_only.get("/api/config")).json()
    assert config["readOnly"] is True


async def test_a_new_run_must_be_a_yaml_mapping(local: TestClient[Any, Any]) -> None:
    response = await local.post(
        "/api/runs/team-a?dryRun=true", data="- a list", headers={ACTION_HEADER: "1"}
    )
    assert response.status == 400
    assert "YAML mapping" in (await response.json())["error"]


async def test_on_loopback_only_loopback_host_names_are_served(local: TestClient[Any, Any]) -> None:
    # A site whose name was rebound to 127.0.0.1 sends its own name as Host.
    for host, status in [("evil.example:8765", 403), ("localhost:8765", 200), ("[::1]:8765", 200)]:
        response = await local.get("/api/config", headers={"Host": host})
        assert response.status == status, host
