"""What the dashboard shows, as plain data computed from Kubernetes objects: pure functions,
unit-tested without a cluster (tests/unit/test_dashboard_views.py). The server does the I/O and
the browser only lays these dicts out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from batchpredict.api.v1alpha1.status import TERMINAL_PHASES
from batchpredict.console.runs import parse_time
from batchpredict.reconcile.naming import LABEL_ROLE, LABEL_ROUND

# The pod annotation the Job controller sets on each pod of an Indexed Job.
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")

# Conditions in plain words: (type, status) -> sentence. The reason and message follow it.
_CONDITION_WORDS: dict[tuple[str, str], str] = {
    ("ModelReady", "True"): "The model is ready on Triton.",
    ("ModelReady", "False"): "The model is not ready.",
    ("ModelReady", "Unknown"): "The model has not been checked yet.",
    ("Progressing", "True"): "The run is making progress.",
    ("Progressing", "False"): "The run is not making progress.",
    ("Stalled", "True"): "The run is stalled: no item has finished for a while.",
    ("Stalled", "False"): "The run is not stalled.",
    ("Complete", "True"): "The run has finished.",
    ("Complete", "False"): "The run has not finished yet.",
    ("Failed", "True"): "The run has failed.",
    ("Failed", "False"): "The run has not failed.",
}


_BAD_WHEN_TRUE = frozenset({"Stalled", "Failed"})


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def duration_seconds(start: str | None, end: str | None, now: datetime | None = None) -> int | None:
    """How long the run took (or has taken so far, while it goes on)."""
    began = parse_time(start)
    if began is None:
        return None
    ended = parse_time(end) or now or datetime.now(UTC)
    return max(0, int((ended - began).total_seconds()))


def percent(status: dict[str, Any]) -> float | None:
    """Share of items done, 0..100, from the counts (not the rounded `progress` string)."""
    items = status.get("items") or {}
    total = items.get("total")
    if not total:
        return 100.0 if status.get("phase") == "Succeeded" else None
    done = int(items.get("succeeded") or 0) + int(items.get("failed") or 0)
    done -= int(items.get("retrying") or 0)
    return round(min(100.0, 100.0 * max(0, done) / int(total)), 1)


def model_label(spec: dict[str, Any]) -> str:
    name = _get(spec, "model", "name") or "?"
    version = _get(spec, "model", "version")
    return f"{name}:{version}" if version else str(name)


def run_row(bp: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """One line of the runs table."""
    meta, spec, status = bp.get("metadata") or {}, bp.get("spec") or {}, bp.get("status") or {}
    items = status.get("items") or {}
    phase = status.get("phase") or "Pending"
    return {
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "resourceVersion": meta.get("resourceVersion", ""),
        "model": model_label(spec),
        "dataset": _get(spec, "input", "uri") or "",
        "startedBy": status.get("startedBy")
        or (meta.get("annotations") or {}).get("batchpredict.io/started-by")
        or "",
        "phase": phase,
        "finished": phase in TERMINAL_PHASES,
        "percent": percent(status),
        "progress": status.get("progress") or "",
        "succeeded": int(items.get("succeeded") or 0),
        "failed": int(items.get("failed") or 0),
        "total": items.get("total"),
        "itemsPerSecond": status.get("itemsPerSecond"),
        "eta": status.get("eta") or "",
        "round": int(status.get("round") or 0),
        "startTime": status.get("startTime") or meta.get("creationTimestamp"),
        "completionTime": status.get("completionTime"),
        "durationSeconds": duration_seconds(
            status.get("startTime") or meta.get("creationTimestamp"),
            status.get("completionTime"),
            now,
        ),
        "suspended": bool(spec.get("suspend")),
        "message": status.get("message") or "",
    }


def plain_condition(condition: dict[str, Any]) -> dict[str, Any]:
    """A condition as a sentence a user reads, with its reason, message and time."""
    kind, state = str(condition.get("type", "")), str(condition.get("status", "Unknown"))
    sentence = _CONDITION_WORDS.get((kind, state), f"{kind} is {state}.")
    return {
        "type": kind,
        "status": state,
        "sentence": sentence,
        "reason": condition.get("reason") or "",
        "message": condition.get("message") or "",
        "since": condition.get("lastTransitionTime"),
        "tone": _tone(kind, state),
    }


def _tone(kind: str, state: str) -> str:
    """good, bad or neutral: a finished run that is not Progressing is no bad news."""
    if (kind in _BAD_WHEN_TRUE and state == "True") or (kind == "ModelReady" and state == "False"):
        return "bad"
    if (kind in _BAD_WHEN_TRUE and state == "False") or state == "True":
        return "good"
    return "neutral"


def spec_summary(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """The spec in a few labelled lines for the run page's header."""
    triton = spec.get("triton") or {}
    serving = triton.get("url") or ("sidecar " + str(_get(triton, "sidecar", "image") or ""))
    lines = [
        ("Model", model_label(spec)),
        ("Triton", serving.strip()),
        ("Dataset", f"{_get(spec, 'input', 'uri') or ''} ({_get(spec, 'input', 'format') or ''})"),
        (
            "Output",
            f"{_get(spec, 'output', 'uri') or ''} ({_get(spec, 'output', 'format') or 'jsonl'})",
        ),
        ("Parallelism", str(spec.get("parallelism", ""))),
        ("Shards", _shards(spec)),
    ]
    if spec.get("queueName"):
        lines.append(("Queue", str(spec["queueName"])))
    return [(k, v) for k, v in lines if v.strip(" ()")]


def _shards(spec: dict[str, Any]) -> str:
    if spec.get("shards"):
        return str(spec["shards"])
    if spec.get("itemsPerShard"):
        return f"{spec['itemsPerShard']} items each"
    return "automatic"


def _pod_row(pod: dict[str, Any]) -> dict[str, Any]:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    containers = [c.get("name", "") for c in _get(pod, "spec", "containers") or []]
    restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or [])
    return {
        "name": meta.get("name", ""),
        "role": labels.get(LABEL_ROLE, ""),
        "round": labels.get(LABEL_ROUND, ""),
        "shard": annotations.get(COMPLETION_INDEX),
        "phase": status.get("phase") or "",
        "restarts": restarts,
        "containers": containers,
    }


def rounds(
    status: dict[str, Any], jobs: list[dict[str, Any]], reports: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each round's Indexed Job and its shards' progress (from the shard reports, while they
    exist: a finished run's are deleted once its counts are in status)."""
    by_name = {_get(j, "metadata", "name"): j for j in jobs}
    out = []
    for child in status.get("jobs") or []:
        number = int(child.get("round") or 0)
        job = by_name.get(child.get("name")) or {}
        job_status = job.get("status") or {}
        shards: list[dict[str, Any]] = []
        for report in reports:
            if _get(report, "spec", "round") != number:
                continue
            progress = report.get("progress") or {}
            total = int(progress.get("itemsTotal") or 0)
            done = int(progress.get("succeeded") or 0) + int(progress.get("failed") or 0)
            shards.append(
                {
                    "shard": int(_get(report, "spec", "shard") or 0),
                    "itemsTotal": total,
                    "succeeded": int(progress.get("succeeded") or 0),
                    "failed": int(progress.get("failed") or 0),
                    "percent": round(100.0 * done / total, 1) if total else None,
                    "itemsPerSecond": progress.get("itemsPerSecond"),
                    "finished": bool(progress.get("finished")),
                    "waiting": progress.get("waitingReason") or "",
                }
            )
        out.append(
            {
                "round": number,
                "job": child.get("name", ""),
                "completions": _get(job, "spec", "completions"),
                "active": int(job_status.get("active") or 0),
                "succeeded": int(job_status.get("succeeded") or 0),
                "failed": int(job_status.get("failed") or 0),
                "shards": sorted(shards, key=lambda s: s["shard"]),
            }
        )
    return out


def event_row(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": event.get("type") or "",
        "reason": event.get("reason") or "",
        "message": event.get("message") or "",
        "count": int(event.get("count") or 1),
        "time": event.get("lastTimestamp")
        or event.get("eventTime")
        or _get(event, "metadata", "creationTimestamp"),
    }


def run_detail(
    bp: dict[str, Any],
    *,
    jobs: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    reports: list[dict[str, Any]],
    events: list[dict[str, Any]],
    evaluation: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything the run page shows, but the results (paged separately)."""
    spec, status = bp.get("spec") or {}, bp.get("status") or {}
    input_format = _get(spec, "input", "format") or ""
    return {
        "row": run_row(bp, now),
        "summary": spec_summary(spec),
        "conditions": [plain_condition(c) for c in status.get("conditions") or []],
        "timestamps": {
            "created": _get(bp, "metadata", "creationTimestamp"),
            "started": status.get("startTime"),
            "lastProgress": status.get("lastProgressTime"),
            "completed": status.get("completionTime"),
            "nextRetry": status.get("nextRetryTime"),
        },
        "usage": status.get("usage"),
        "items": status.get("items") or {},
        "rounds": rounds(status, jobs, reports),
        "failureSummary": status.get("failureSummary") or [],
        "failedItems": status.get("failedItems") or [],
        "events": sorted(
            (event_row(e) for e in events), key=lambda e: str(e["time"] or ""), reverse=True
        ),
        "pods": sorted(
            (_pod_row(p) for p in pods), key=lambda p: (str(p["round"]), str(p["name"]))
        ),
        "evaluation": evaluation or status.get("evaluation"),
        "output": status.get("output") or {},
        "images": input_format == "files",
    }


def looks_like_image(item_id: str) -> bool:
    return item_id.lower().endswith(IMAGE_SUFFIXES)


def template(bp: dict[str, Any]) -> dict[str, Any]:
    """A new run from this one: its spec under a new name, nothing the server set."""
    meta = bp.get("metadata") or {}
    return {
        "apiVersion": bp.get("apiVersion", "batchpredict.io/v1alpha1"),
        "kind": bp.get("kind", "BatchPrediction"),
        "metadata": {"name": f"{meta.get('name', 'run')}-copy"[:253]},
        "spec": bp.get("spec") or {},
    }
