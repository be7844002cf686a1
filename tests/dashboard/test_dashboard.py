"""The dashboard in a real headless Chromium against the test cluster, the operator and a real
Triton: what a user sees on the runs page and a run's page, and what its buttons do. Every test
ends with no console error or uncaught exception in the page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.dashboard.cdp import Page
from tests.dashboard.conftest import Dashboard
from tests.e2e.conftest import (
    SLOW_SMALL_CHUNKS,
    OperatorProcess,
    batch_prediction,
    get_bp,
    wait_for_phase,
    wait_until,
    write_items,
)
from tests.harness.fixtures import Cluster
from tests.harness.triton_server import TritonHandle

TERMINAL = {"Succeeded", "PartiallySucceeded", "Failed", "Cancelled"}
PHONE = (390, 844)


def row(namespace: str, name: str) -> str:
    """A JavaScript expression: the runs table's row of a run."""
    return f"document.querySelector('tr[data-run=\"{namespace}/{name}\"]')"


async def set_filter(page: Page, element: str, value: str) -> None:
    await page.eval(
        f"(() => {{ const e = document.getElementById({json.dumps(element)});"
        f" e.value = {json.dumps(value)}; e.dispatchEvent(new Event('input')); }})()"
    )


async def fits_width(page: Page) -> bool:
    """The page does not scroll sideways (wide tables scroll inside their own box)."""
    return bool(
        await page.eval(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1"
        )
    )


async def test_the_runs_table_shows_progress_moving_without_a_reload(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    dashboard: Dashboard,
    page: Page,
    screenshots: Path,
    tmp_path: Path,
) -> None:
    dataset = write_items(tmp_path / "items.jsonl", [float(n) for n in range(20000)])
    body = batch_prediction("live", triton_server, dataset, tmp_path / "out", **SLOW_SMALL_CHUNKS)
    cluster.apply(body, namespace)
    wait_until(
        cluster,
        "live",
        namespace,
        lambda s: (s.get("items") or {}).get("succeeded", 0) > 0,
        "the first items done",
    )
    await page.goto(dashboard.url)
    first = await page.wait_for(
        f"{row(namespace, 'live')}?.querySelector('.progress-text')?.innerText",
        "the run's row with its progress",
    )
    assert "Running" in await page.eval(f"{row(namespace, 'live')}.innerText")
    assert "double" not in first  # the progress cell, not the model's
    # The same document all along: a marker set now is still there when the numbers move.
    await page.eval("window.__sameDocument = true")
    moved = await page.wait_for(
        f"window.__sameDocument && {row(namespace, 'live')}.querySelector('.progress-text')"
        f".innerText !== {json.dumps(first)} && "
        f"{row(namespace, 'live')}.querySelector('.progress-text').innerText",
        "the progress to move",
    )
    assert await page.eval("performance.getEntriesByType('navigation').length") == 1
    assert await page.eval("window.__sameDocument") is True
    status = get_bp(cluster, "live", namespace)["status"]
    assert moved != first, (first, moved, status.get("items"))
    bar = await page.eval(f"{row(namespace, 'live')}.querySelector('progress').value")
    assert 0 < bar <= 100
    # Filters: its phase keeps it; a search for another name hides it.
    await set_filter(page, "f-phase", "Running")
    assert await page.eval(f"{row(namespace, 'live')} !== null")
    await set_filter(page, "search", "no-such-run")
    assert await page.eval(f"{row(namespace, 'live')} === null")
    await set_filter(page, "search", "")
    await set_filter(page, "f-phase", "")
    await page.screenshot(screenshots / "runs-1280.png", full_page=False)
    await page.viewport(*PHONE, mobile=True)
    assert await fits_width(page)
    await page.screenshot(screenshots / "runs-phone.png", full_page=False)
    await page.viewport(1280, 900)

    # Cancel from the run page (two clicks: the first arms the button).
    await page.goto(f"{dashboard.url}runs/{namespace}/live")
    await page.wait_for(
        "document.getElementById('run-name').innerText === 'live' &&"
        " !document.getElementById('act-cancel').disabled",
        "the run page with Cancel enabled",
    )
    await page.click("#act-cancel")
    await page.click("#act-cancel")
    await page.wait_for(
        "document.getElementById('action-result').innerText.includes('cancel sent')",
        "the page to say the cancel was sent",
    )
    wait_for_phase(
        cluster, name="live", namespace=namespace, phases={"Cancelled"}, operator=operator_process
    )
    await page.wait_for(
        "document.getElementById('phase').innerText === 'Cancelled'", "the page to say Cancelled"
    )
    assert page.errors == []
    assert page.failed_requests == []


async def test_a_failed_item_shows_its_code_retry_starts_a_round_and_results_show(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    dashboard: Dashboard,
    page: Page,
    screenshots: Path,
    tmp_path: Path,
) -> None:
    values = [-1.0 if n % 50 == 0 else float(n) for n in range(200)]
    dataset = write_items(tmp_path / "items.jsonl", values)
    gate = triton_server.model_repository / "gate" / "open"
    gate.unlink(missing_ok=True)
    cluster.apply(
        batch_prediction("gated", triton_server, dataset, tmp_path / "out", model={"name": "gate"}),
        namespace,
    )
    first = wait_for_phase(
        cluster, name="gated", namespace=namespace, phases=TERMINAL, operator=operator_process
    )["status"]
    assert first["phase"] == "PartiallySucceeded", first.get("message")
    code = next(i["code"] for i in first["failedItems"] if i["id"] == "item-50")

    await page.goto(f"{dashboard.url}runs/{namespace}/gated")
    failed = await page.wait_for(
        "document.querySelector('#failed-items tr[data-item=\"item-50\"]')?.innerText",
        "the failed item item-50",
    )
    assert code in failed
    assert "negative input -1.0 is not allowed" in failed
    assert code in await page.text("#failure-summary")
    assert "PartiallySucceeded" in await page.text("#phase")
    # Results: the run's predictions (y = 2x), paged.
    results = await page.wait_for(
        "document.querySelector('#results tbody')?.innerText", "the results table"
    )
    assert "item-1" in results
    cells = await page.eval(
        "[...document.querySelectorAll('#results tbody tr')].map("
        "r => [...r.cells].map(c => c.innerText))"
    )
    columns = await page.eval("[...document.querySelectorAll('#results th')].map(c => c.innerText)")
    by_id = {
        dict(zip(columns, r, strict=True))["id"]: dict(zip(columns, r, strict=True)) for r in cells
    }
    assert float(by_id["item-1"]["y"]) == 2.0
    assert float(by_id["item-7"]["y"]) == 14.0
    assert len(cells) == 20  # one page
    conditions = await page.text("#conditions")
    assert "The model is ready on Triton." in conditions
    assert "The run has finished." in conditions
    assert "INVALID_ARGUMENT: 4" in await page.text("#failure-summary")
    events = await page.text("#events")
    assert "PartiallySucceeded" in events
    assert "Pending" in events
    # A shard pod's log, read through the API server (pods/log).
    assert "shards round 0 shard 1" in await page.text("#pods")
    await page.eval(
        "[...document.querySelectorAll('#pods li')].find(li => li.innerText.includes("
        "'shards round 0 shard 1')).querySelector('button').click()"
    )
    log = await page.wait_for(
        "!document.getElementById('log').innerText.startsWith('Loading') &&"
        " document.getElementById('log').innerText",
        "the pod's log",
    )
    assert not log.startswith("Cannot read the log"), log
    assert log != "(empty log)"
    await page.screenshot(screenshots / "run-1280.png")
    await page.viewport(*PHONE, mobile=True)
    assert await fits_width(page)
    await page.screenshot(screenshots / "run-phone.png", full_page=False)
    await page.viewport(1280, 900)

    # Retry from the page, once the model accepts what it refused: a new round starts.
    gate.write_text("fixed")
    try:
        await page.wait_for(
            "document.getElementById('run-name').innerText === 'gated' &&"
            " !document.getElementById('act-retry').disabled",
            "Retry enabled",
        )
        await page.click("#act-retry")
        await page.wait_for(
            "document.getElementById('action-result').innerText.includes('retry sent')",
            "the page to say the retry was sent",
        )
        status = wait_for_phase(
            cluster,
            name="gated",
            namespace=namespace,
            phases={"Succeeded"},
            operator=operator_process,
        )["status"]
    finally:
        gate.unlink(missing_ok=True)
    assert status["round"] >= 1
    assert status["lastRetryRequest"]
    await page.wait_for(
        "document.getElementById('phase').innerText === 'Succeeded' && "
        "document.getElementById('rounds').innerText.includes('Round 1')",
        "the page to show round 1 and Succeeded (no reload)",
    )
    assert await page.eval("performance.getEntriesByType('navigation').length") == 1

    # New run from this one: the API server validates the edited copy (a dry run).
    await page.click("#act-copy")
    text = await page.wait_for(
        "document.getElementById('editor-text').value", "the copy in the editor"
    )
    assert "name: gated-copy" in text
    await page.eval(
        "(() => { const t = document.getElementById('editor-text');"
        " t.value = t.value.replace(/parallelism: \\d+/, 'parallelism: 0'); })()"
    )
    await page.click("#editor-validate")
    refused = await page.wait_for(
        "document.getElementById('editor-result').innerText.startsWith('Refused') && "
        "document.getElementById('editor-result').innerText",
        "the API server's refusal",
    )
    assert "parallelism" in refused
    await page.eval(
        "(() => { const t = document.getElementById('editor-text');"
        " t.value = t.value.replace(/parallelism: 0/, 'parallelism: 1'); })()"
    )
    await page.click("#editor-validate")
    await page.wait_for(
        "document.getElementById('editor-result').innerText.includes('dry run passed')",
        "the dry run to pass",
    )
    assert cluster.get("batchpredictions.batchpredict.io", "gated-copy", namespace) is None

    # Evaluation metrics, when the run has them (evaluation.json, read by io/results.py): this
    # run compares with no labels, so the test writes the file where the finalize step would.
    assert "Evaluation" not in await page.text("#downloads")
    metrics = {"accuracy": 0.98, "items": 196}
    (tmp_path / "out" / "evaluation.json").write_text(json.dumps(metrics))
    await page.goto(f"{dashboard.url}runs/{namespace}/gated")
    shown = await page.wait_for(
        "!document.getElementById('evaluation-section').hidden &&"
        " document.getElementById('evaluation').innerText",
        "the evaluation section",
    )
    assert "accuracy" in shown
    assert "0.98" in shown
    assert "Evaluation (JSON)" in await page.text("#downloads")
    assert page.errors == []
    # The one refused request is the dry run of the invalid copy (422 from the API server).
    assert len(page.failed_requests) == 1, page.failed_requests
    assert "dryRun=true" in page.failed_requests[0]
    assert "422" in page.failed_requests[0]


@pytest.mark.usefixtures("operator_process")
async def test_the_read_only_mode_shows_runs_and_refuses_actions(
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    read_only_dashboard: Dashboard,
    page: Page,
    tmp_path: Path,
) -> None:
    images = tmp_path / "images" / "scans"
    images.mkdir(parents=True)
    for value in range(6):
        Image.new("RGB", (64, 48), (value * 40, 80, 160)).save(images / f"scan{value}.png")
    bp = batch_prediction(
        "seen",
        triton_server,
        tmp_path / "images",
        tmp_path / "out",
        model={"name": "image_mean", "inputs": [{"name": "image", "field": "$item"}]},
        input={
            "uri": str(tmp_path / "images"),
            "format": "files",
            "preprocess": {"image": {"resize": [8, 8], "scale": 1.0}},
        },
        shards=1,
        parallelism=1,
    )
    cluster.apply(bp, namespace)
    await page.goto(read_only_dashboard.url)
    await page.wait_for(
        "document.getElementById('mode').innerText === 'Read-only'", "the read-only badge"
    )
    await page.wait_for(f"!!{row(namespace, 'seen')}", "the run in the read-only table")
    await page.goto(f"{read_only_dashboard.url}runs/{namespace}/seen")
    await page.wait_for("document.getElementById('run-name').innerText === 'seen'", "the run page")
    disabled = await page.eval(
        "[...document.querySelectorAll('.actions button[id^=act-]')].map(b => b.disabled)"
    )
    assert disabled == [True] * 5
    # A request sent anyway is refused with the reason, and nothing changes.
    answer = await page.eval(
        f"fetch('/api/runs/{namespace}/seen/actions/cancel', {{method: 'POST',"
        " headers: {'X-Batchpredict-Action': '1'}}).then(async r => [r.status, await r.json()])"
    )
    assert answer[0] == 403
    assert "read-only" in answer[1]["error"]
    annotations = get_bp(cluster, "seen", namespace)["metadata"].get("annotations") or {}
    assert "batchpredict.io/cancel" not in annotations
    # Its ServiceAccount may not act either: the chart grants get/list/watch only.
    can = cluster.kubectl(
        "auth",
        "can-i",
        "patch",
        "batchpredictions.batchpredict.io",
        "-n",
        namespace,
        "--as",
        "system:serviceaccount:batchpredict-dashboard-test:batchpredict-dashboard",
        check=False,
    )
    assert can.stdout.strip() == "no"
    assert page.errors == []
    assert len(page.failed_requests) == 1, page.failed_requests  # the cancel sent anyway
    assert "403" in page.failed_requests[0]

    # The results of an image dataset show each image as a thumbnail, read-only too.
    wait_for_phase(cluster, name="seen", namespace=namespace, phases={"Succeeded"})
    await page.goto(f"{read_only_dashboard.url}runs/{namespace}/seen")
    loaded = await page.wait_for(
        "(() => { const imgs = [...document.querySelectorAll('#results img.thumb')];"
        " return imgs.length === 6 && imgs.every(i => i.complete && i.naturalWidth > 0)"
        " && imgs.map(i => i.alt); })()",
        "six thumbnails loaded",
    )
    assert sorted(loaded) == [f"Image scans/scan{n}.png" for n in range(6)]
    assert "mean" in await page.text("#results thead")
    assert page.errors == []
