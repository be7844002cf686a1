"""`kubectl batchpredict` as a user runs it, against the local cluster, the operator and real
Triton. One run with failures of two codes and a `retry --code` round is shared by the
read-only verbs; every run ends with the invariant check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
import pytest
import yaml

from tests.e2e.conftest import (
    SLOW_SMALL_CHUNKS,
    OperatorProcess,
    assert_run_truth,
    batch_prediction,
    free_port,
    get_bp,
    wait_until,
    write_items,
)
from tests.harness.fixtures import Cluster
from tests.harness.triton_server import TritonHandle

PLUGIN = str(Path(sys.executable).parent / "kubectl-batchpredict")
ITEMS = 200
NEGATIVE = {10, 110}  # the `gate` model rejects them (INVALID_ARGUMENT) until it is opened
MALFORMED = {50}  # "oops" is no FP32 (MALFORMED_ITEM): a retry cannot help


@dataclass(frozen=True)
class SharedRun:
    name: str
    namespace: str
    output: Path
    spec_file: Path
    watched_screen: str  # what `watch` drew in a pseudo-terminal
    piped: subprocess.CompletedProcess[str]  # `watch` of the retry round, in a pipe


def plugin(
    cluster: Cluster, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLUGIN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**cluster.env(), "NO_COLOR": "1", **env},
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def console_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-console-{uuid.uuid4().hex[:5]}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    cluster.wait_for(lambda: cluster.get("serviceaccount", "default", name), "default SA")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def shared_run(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    console_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> SharedRun:
    """A run submitted, watched in a pseudo-terminal to its end (PartiallySucceeded with
    both codes), retried for INVALID_ARGUMENT only once the model accepts those items,
    watched again in a pipe (PartiallySucceeded with the malformed item alone)."""
    tmp = tmp_path_factory.mktemp("console")
    values: list[Any] = [float(n) for n in range(ITEMS)]
    for n in NEGATIVE:
        values[n] = -1.0
    dataset = write_items(tmp / "items.jsonl", values)
    for n in MALFORMED:  # write_items writes numbers; one row gets a word instead
        lines = dataset.read_text().splitlines()
        lines[n] = json.dumps({"id": f"item-{n}", "x": "oops"})
        dataset.write_text("\n".join(lines) + "\n")
    output = tmp / "out"
    name, namespace = "scoring", console_namespace
    gate = triton_server.model_repository / "gate" / "open"
    gate.unlink(missing_ok=True)
    body = batch_prediction(name, triton_server, dataset, output, model={"name": "gate"})
    spec_file = tmp / "run.yaml"
    spec_file.write_text(yaml.safe_dump(body))
    submitted = plugin(cluster, "submit", "-f", str(spec_file), "-n", namespace)
    assert submitted.returncode == 0, submitted.stderr
    assert f"batchprediction.batchpredict.io/{name} created" in submitted.stdout
    assert f"watch {name} -n {namespace}" in submitted.stdout
    screen = watch_in_a_terminal(cluster, name, namespace)
    gate.write_text("open")
    try:
        retried = plugin(cluster, "retry", name, "--code", "INVALID_ARGUMENT", "-n", namespace)
        assert retried.returncode == 0, retried.stderr
        assert "retry of 2 failed items of code INVALID_ARGUMENT requested" in retried.stdout
        piped = plugin(cluster, "watch", name, "-n", namespace, "--timeout", "180", timeout=200)
    finally:
        gate.unlink(missing_ok=True)
    assert_run_truth(cluster, name, namespace, output, ITEMS)
    return SharedRun(name, namespace, output, spec_file, screen, piped)


def watch_in_a_terminal(cluster: Cluster, name: str, namespace: str) -> str:
    """`watch` in a real pseudo-terminal until the run ends; the screen's text."""
    env = {**cluster.env(), "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(
        PLUGIN,
        ["watch", name, "-n", namespace, "--timeout", "180"],
        env=env,
        dimensions=(40, 160),
        encoding="utf-8",
        timeout=200,
    )
    child.expect(pexpect.EOF)
    child.close()
    screen = str(child.before)
    assert child.exitstatus == 2, f"PartiallySucceeded exits 2: {screen[-2000:]}"
    return screen


def test_watch_draws_bars_in_a_terminal_and_prints_lines_in_a_pipe(shared_run: SharedRun) -> None:
    screen = shared_run.watched_screen
    assert "\x1b[" in screen, "a terminal gets a live, redrawn screen"
    assert "━" in screen, "with progress bars"
    assert f"{ITEMS}/{ITEMS} items" in screen
    assert "PartiallySucceeded" in screen
    piped = shared_run.piped
    assert piped.returncode == 2, piped.stdout + piped.stderr
    assert "\x1b[" not in piped.stdout, "a pipe gets plain lines"
    lines = piped.stdout.splitlines()
    assert any("Running" in line and "round 1" in line for line in lines), lines
    changes = [line for line in lines if not line.startswith("  failed ")]
    assert f"PartiallySucceeded  {ITEMS}/{ITEMS} items  100%  failed 1" in changes[-1], lines
    assert "  failed item-50: MALFORMED_ITEM: field 'x': cannot convert 'oops'" in piped.stdout


def test_list_and_get_show_the_run_its_rounds_and_failures(
    shared_run: SharedRun, cluster: Cluster
) -> None:
    ns = shared_run.namespace
    listed = plugin(cluster, "list", "-n", ns)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    for column in ("NAME", "MODEL", "STARTED BY", "PROGRESS", "START", "DURATION", "STATUS"):
        assert column in header
    assert row.split()[:2] == [shared_run.name, "gate"]
    assert "PartiallySucceeded" in row
    assert f"{ITEMS}/{ITEMS}" in row
    names = plugin(cluster, "list", "-n", ns, "-o", "name", "--phase", "partiallysucceeded")
    assert names.stdout == f"batchprediction.batchpredict.io/{shared_run.name}\n"
    none = plugin(cluster, "list", "-n", ns, "--phase", "Running", "--no-headers")
    assert none.stdout.startswith("No batchpredictions found")
    got = plugin(cluster, "get", "@latest", "-n", ns)
    assert got.returncode == 0, got.stderr
    text = got.stdout
    assert f"{shared_run.name} (namespace {ns})" in text
    assert "round 0 (first pass)" in text
    assert "round 1 (manual retry)" in text
    assert "✔ shard 0" in text
    assert "MALFORMED_ITEM" in text
    assert "INVALID_ARGUMENT" not in text, "the retried code is gone from the summary"
    as_json = json.loads(plugin(cluster, "get", shared_run.name, "-n", ns, "-o", "json").stdout)
    assert as_json["status"] == get_bp(cluster, shared_run.name, ns)["status"]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_results_and_failures_equal_the_files(
    shared_run: SharedRun, cluster: Cluster, tmp_path: Path
) -> None:
    ns, name = shared_run.namespace, shared_run.name
    manifest = json.loads((shared_run.output / "manifest.json").read_text())
    in_files = [
        row
        for url in manifest["predictionFiles"]
        for row in _jsonl(Path(url.removeprefix("file://")))
    ]
    shown = plugin(cluster, "results", name, "-n", ns, "-o", "jsonl")
    assert shown.returncode == 0, shown.stderr
    assert [json.loads(line) for line in shown.stdout.splitlines()] == in_files
    assert len(in_files) == ITEMS - len(MALFORMED)
    one = plugin(cluster, "results", name, "-n", ns, "--where", "id=item-10", "-o", "csv")
    assert one.stdout.splitlines() == ["id,y", "item-10,-2.0"], "redone once the gate opened"
    limited = plugin(cluster, "results", name, "-n", ns, "--limit", "3")
    assert len(limited.stdout.splitlines()) == 4  # the header and 3 rows
    failures = plugin(cluster, "failures", name, "-n", ns, "-o", "jsonl")
    assert [json.loads(line) for line in failures.stdout.splitlines()] == _jsonl(
        shared_run.output / "failures.jsonl"
    )
    table = plugin(cluster, "failures", name, "-n", ns, "--code", "MALFORMED_ITEM")
    assert "item-50" in table.stdout
    assert "cannot convert 'oops' to FP32" in table.stdout
    target = tmp_path / "download"
    downloaded = plugin(cluster, "results", name, "-n", ns, "--download", str(target))
    assert downloaded.returncode == 0, downloaded.stderr
    assert json.loads((target / "manifest.json").read_text()) == manifest
    assert _jsonl(target / "failures.jsonl") == _jsonl(shared_run.output / "failures.jsonl")


def test_predict_answers_what_the_run_wrote(shared_run: SharedRun, cluster: Cluster) -> None:
    ns, name = shared_run.namespace, shared_run.name
    predicted = plugin(cluster, "predict", "-f", str(shared_run.spec_file), "--from-dataset", "60")
    assert predicted.returncode == 0, predicted.stderr
    answer = json.loads(predicted.stdout)
    shown = plugin(cluster, "results", name, "-n", ns, "-o", "jsonl").stdout
    written = {row["id"]: row for row in map(json.loads, shown.splitlines())}
    assert answer["predictions"], answer
    for row in answer["predictions"]:
        assert row == written[row["id"]]
    assert len(answer["predictions"]) == 60 - 2, "the gate is closed again: item-10 fails"
    run_failure = next(f for f in _jsonl(shared_run.output / "failures.jsonl"))
    mine = {f["id"]: f for f in answer["failures"]}
    assert mine["item-50"]["message"] == run_failure["message"]
    assert mine["item-50"]["code"] == "MALFORMED_ITEM"
    assert mine["item-10"]["code"] == "INVALID_ARGUMENT"
    assert set(answer["timings"]) >= {"connect", "infer", "pipeline"}
    row = plugin(cluster, "predict", "-f", str(shared_run.spec_file), "--row", '{"x": 4}')
    assert json.loads(row.stdout)["predictions"][0]["y"] == 8.0


def test_logs_of_each_step(shared_run: SharedRun, cluster: Cluster) -> None:
    ns, name = shared_run.namespace, shared_run.name
    shard = plugin(cluster, "logs", name, "-n", ns, "--shard", "0", "--round", "0")
    assert shard.returncode == 0, shard.stderr
    lines = shard.stdout.splitlines()
    assert lines
    assert all(line.startswith("[r0/shard-0] ") for line in lines)
    plan = plugin(cluster, "logs", name, "-n", ns, "--role", "plan")
    assert plan.stdout.splitlines()
    assert plan.stdout.startswith("[r0/plan] ")
    first = json.loads(plan.stdout.splitlines()[0].removeprefix("[r0/plan] "))
    assert first["logger"].startswith("batchpredict"), "the worker's lines, as it wrote them"
    followed = plugin(cluster, "logs", name, "-n", ns, "--role", "plan", "-f", timeout=60)
    assert followed.stdout == plan.stdout, "a finished pod's log, followed to its end"


def test_refusals_are_one_line_errors(
    shared_run: SharedRun, cluster: Cluster, tmp_path: Path
) -> None:
    ns, name = shared_run.namespace, shared_run.name
    unknown = one_line_error(plugin(cluster, "get", "nope", "-n", ns))
    assert unknown == f'error: batchprediction "nope" in namespace "{ns}": not found'
    finished = one_line_error(plugin(cluster, "cancel", name, "-n", ns))
    assert finished == f"error: {name} is PartiallySucceeded: nothing to cancel"
    no_code = one_line_error(plugin(cluster, "retry", name, "-n", ns, "--code", "NOT_FOUND"))
    assert "has no failures of code NOT_FOUND (it has: MALFORMED_ITEM)" in no_code
    # A user with no rights: a ServiceAccount without any RoleBinding, by its own token.
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", ns)
    token = cluster.kubectl("create", "token", "nobody", "-n", ns).stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    kubeconfig = tmp_path / "nobody.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    denied = one_line_error(plugin(cluster, "get", name, "-n", ns, KUBECONFIG=str(kubeconfig)))
    assert "forbidden" in denied
    assert f"system:serviceaccount:{ns}:nobody" in denied
    retry = one_line_error(plugin(cluster, "retry", name, "-n", ns, KUBECONFIG=str(kubeconfig)))
    assert "forbidden" in retry
    spec = yaml.safe_load(shared_run.spec_file.read_text())
    spec["spec"]["triton"]["url"] = f"localhost:{free_port()}"
    unreachable_file = tmp_path / "unreachable.yaml"
    unreachable_file.write_text(yaml.safe_dump(spec))
    unreachable = one_line_error(
        plugin(cluster, "predict", "-f", str(unreachable_file), "--row", "{}", "--wait", "1")
    )
    assert "TritonUnavailable" in unreachable
    assert "is not reachable" in unreachable
    path = f"{Path(cluster.kubectl_bin).parent}{os.pathsep}{os.environ['PATH']}"
    forward = ["--port-forward", "svc/no-triton", "-n", ns]
    no_service = one_line_error(
        plugin(cluster, "predict", "-f", str(unreachable_file), "--row", "{}", *forward, PATH=path)
    )
    assert no_service.startswith("error: cannot port-forward to svc/no-triton: ")
    assert 'services "no-triton" not found' in no_service


def test_suspend_resume_cancel_and_status_exit_codes(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    console_namespace: str,
    tmp_path: Path,
) -> None:
    ns, name = console_namespace, "paused"
    dataset = write_items(tmp_path / "items.jsonl", [float(n) for n in range(2000)])
    output = tmp_path / "out"
    cluster.apply(batch_prediction(name, triton_server, dataset, output, **SLOW_SMALL_CHUNKS), ns)
    wait_until(cluster, name, ns, lambda s: s.get("phase") == "Running", "Running")
    waited = plugin(cluster, "status", name, "-n", ns, "--timeout", "1")
    assert waited.returncode == 124, waited.stdout + waited.stderr
    assert f"timed out after 1s: {name} is Running" in waited.stdout
    suspended = plugin(cluster, "suspend", name, "-n", ns)
    assert suspended.stdout.strip() == f"batchprediction/{name} suspended"
    wait_until(cluster, name, ns, lambda s: s.get("phase") == "Suspended", "Suspended")
    resumed = plugin(cluster, "resume", name, "-n", ns)
    assert resumed.stdout.strip() == f"batchprediction/{name} resumed"
    wait_until(cluster, name, ns, lambda s: s.get("phase") == "Running", "Running again")
    cancelled = plugin(cluster, "cancel", name, "-n", ns)
    assert cancelled.returncode == 0, cancelled.stderr
    ended = plugin(cluster, "status", name, "-n", ns, "--timeout", "120", timeout=150)
    assert ended.returncode == 1, ended.stdout + ended.stderr
    assert ended.stdout.strip() == "Cancelled"
    assert_run_truth(cluster, name, ns, output, 2000)


def test_version_names_the_plugin_and_the_crd(installed_crds: Cluster) -> None:
    shown = plugin(installed_crds, "version")
    assert shown.returncode == 0, shown.stderr
    assert "plugin:   0.1.0 (API v1alpha1)" in shown.stdout
    assert "CRD:      v1alpha1" in shown.stdout
    assert os.path.basename(PLUGIN) == "kubectl-batchpredict"
