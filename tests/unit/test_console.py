"""The console's pure parts: rows and outcomes from a BatchPrediction, rounds and shards from
Jobs, pods, reports and manifests, the one-line form of `watch`, `--where`, and the parser."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from batchpredict.actions import retry_patch
from batchpredict.console.kube import Target
from batchpredict.console.main import build_parser
from batchpredict.console.portforward import forward_args
from batchpredict.console.render import watch_line
from batchpredict.console.runs import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    build_rounds,
    filter_runs,
    run_row,
)
from batchpredict.io.results import matching


def bp(phase: str, **more: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": more.pop("name", "scoring"),
            "namespace": "ml",
            "uid": "u-1",
            "creationTimestamp": more.pop("created", "2026-12-02T10:00:00Z"),
            "annotations": more.pop("annotations", {}),
        },
        "spec": {"model": {"name": "digits"}, "input": {"uri": "s3://b/data"}},
        "status": {
            "phase": phase,
            "startedBy": more.pop("user", "alice"),
            "startTime": "2026-12-02T10:00:00Z",
            "items": {"total": 200, "succeeded": 150, "failed": 3},
            **more,
        },
    }


@pytest.mark.parametrize(
    ("phase", "code"),
    [
        ("Succeeded", 0),
        ("PartiallySucceeded", 2),
        ("Failed", 1),
        ("Cancelled", 1),
        ("Running", None),
        ("Retrying", None),
    ],
)
def test_the_outcome_decides_the_exit_code(phase: str, code: int | None) -> None:
    assert run_row(bp(phase)).exit_code == code


def test_a_retry_not_taken_up_yet_means_the_run_is_not_over() -> None:
    asked = bp(
        "PartiallySucceeded",
        annotations={"batchpredict.io/retry": "2"},
        lastRetryRequest="1",
    )
    assert run_row(asked).exit_code is None
    taken = bp(
        "PartiallySucceeded", annotations={"batchpredict.io/retry": "2"}, lastRetryRequest="2"
    )
    assert run_row(taken).exit_code == 2


def test_list_filters_by_phase_model_and_user_newest_first() -> None:
    rows = [
        run_row(bp("Running", name="a", created="2026-12-02T09:00:00Z")),
        run_row(bp("Running", name="b", created="2026-12-02T11:00:00Z")),
        run_row(bp("Failed", name="c", user="bob")),
    ]
    assert [r.name for r in filter_runs(rows, phase="running")] == ["b", "a"]
    assert [r.name for r in filter_runs(rows, user="bob")] == ["c"]
    assert filter_runs(rows, model="other") == []
    assert run_row(bp("Running")).fraction == pytest.approx(153 / 200)


def test_rounds_and_shards_from_jobs_reports_pods_and_manifests() -> None:
    jobs = [
        {
            "metadata": {
                "name": "scoring-u-1-r0",
                "labels": {"batchpredict.io/role": "shards", "batchpredict.io/round": "0"},
            },
            "status": {"completedIndexes": "0", "failedIndexes": "2", "active": 1},
        },
        {
            "metadata": {
                "name": "scoring-u-1-r1",
                "labels": {"batchpredict.io/role": "shards", "batchpredict.io/round": "1"},
                "annotations": {"batchpredict.io/retry-request": "abc"},
            },
            "status": {"conditions": [{"type": "Complete", "status": "True"}]},
        },
        {"metadata": {"name": "plan", "labels": {"batchpredict.io/role": "plan"}}},
    ]
    reports = [
        {
            "spec": {"round": 0, "shard": 1},
            "progress": {"itemsTotal": 50, "succeeded": 20, "failed": 1, "itemsPerSecond": 9.5},
        }
    ]
    pods = [
        {
            "metadata": {
                "name": "scoring-u-1-r0-1-x",
                "labels": {"batchpredict.io/role": "shards", "batchpredict.io/round": "0"},
                "annotations": {"batch.kubernetes.io/job-completion-index": "1"},
            },
            "status": {"phase": "Running"},
        }
    ]
    manifests = {(0, 0): {"items": 50, "succeeded": 50, "failed": 0, "itemsPerSecond": 40.0}}
    first, second = build_rounds(jobs, pods, reports, manifests, shards=4)
    assert [s.state for s in first.shards] == [DONE, RUNNING, FAILED, PENDING]
    assert (first.shards[1].done, first.shards[1].total) == (21, 50)
    assert first.shards[1].pod == "scoring-u-1-r0-1-x"
    assert first.shards[0].done == 50
    assert first.total is None, "shard 3 has not told its size"
    assert second.manual
    assert second.state == DONE


def test_watch_prints_one_plain_line_per_change() -> None:
    row = run_row(bp("Running", itemsPerSecond=12.5, eta="4s", round=1))
    line = watch_line(row, datetime(2026, 12, 2, 10, 0, 5, tzinfo=UTC))
    assert line.endswith(
        "scoring  Running  153/200 items  76%  failed 3  round 1  12.5 items/s  ETA 4s"
    )


def test_where_compares_fields_as_text() -> None:
    rows = [{"id": "a", "label": 7, "scores": [1, 2]}, {"id": "b", "label": 3}]
    assert list(matching(rows, {"label": "7"})) == [rows[0]]
    assert list(matching(rows, {"scores": "[1,2]"})) == [rows[0]]
    assert list(matching(rows, None)) == rows


def test_retry_patch_sets_or_clears_the_codes() -> None:
    annotations = retry_patch("r1", ["B", "A", "A"])["metadata"]["annotations"]
    assert annotations == {"batchpredict.io/retry": "r1", "batchpredict.io/retry-codes": "A,B"}
    cleared = retry_patch("r2")["metadata"]["annotations"]
    assert cleared["batchpredict.io/retry-codes"] is None, "null removes it in a merge patch"


def test_the_parser_takes_kubectl_options_after_the_verb() -> None:
    args = build_parser().parse_args(
        ["get", "@latest", "-n", "ml", "--context", "dev", "-o", "wide"]
    )
    assert (args.name, args.namespace, args.context, args.output) == (
        "@latest",
        "ml",
        "dev",
        "wide",
    )
    args = build_parser().parse_args(["retry", "x", "--code", "A", "--code", "B"])
    assert args.code == ["A", "B"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["retry", "x", "--code", "A", "--all"])


def test_port_forward_asks_kubectl_for_a_free_local_port() -> None:
    target = Target(kubeconfig="k.yaml", context="dev", namespace="models")
    assert forward_args(target, "svc/triton") == [
        "--kubeconfig",
        "k.yaml",
        "--context",
        "dev",
        "-n",
        "models",
        "port-forward",
        "svc/triton",
        ":8001",
    ]
    assert forward_args(Target(), "svc/triton:8000")[-2:] == ["svc/triton", ":8000"]
