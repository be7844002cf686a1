"""Small manifest builders for the cluster tests.

Containers name a real image so the same manifests run on kind; the local node agent ignores
the image and runs the command with the virtualenv's python.
"""

from __future__ import annotations

from typing import Any

IMAGE = "python:3.11-slim"


def python(code: str) -> list[str]:
    """A container command running `code` with python (PATH has the virtualenv's first)."""
    return ["python", "-c", code]


def container(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "command": python(code), **extra}


def indexed_job(
    name: str,
    code: str,
    completions: int,
    parallelism: int,
    restart_policy: str = "Never",
    **job_spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": parallelism,
            **job_spec,
            "template": {
                "spec": {
                    "restartPolicy": restart_policy,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container("main", code)],
                }
            },
        },
    }


def pod(name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **metadata},
        "spec": {"terminationGracePeriodSeconds": 5, **spec},
    }


def job_pods(items: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
    key = "batch.kubernetes.io/job-completion-index"
    return [p for p in items if p["metadata"]["annotations"].get(key) == str(index)]


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """The condition of type `kind` in obj's status; {} when there is none."""
    conditions = obj.get("status", {}).get("conditions") or []
    return next((dict(c) for c in conditions if c["type"] == kind), {})


def pod_finished(pod_obj: dict[str, Any]) -> bool:
    return pod_obj.get("status", {}).get("phase") in ("Succeeded", "Failed")


def waiting_reason(pod_obj: dict[str, Any], name: str = "main") -> str:
    statuses = pod_obj.get("status", {}).get("containerStatuses") or []
    status: dict[str, Any] = next((s for s in statuses if s["name"] == name), {})
    return str(status.get("state", {}).get("waiting", {}).get("reason", ""))


def terminated(pod_obj: dict[str, Any], name: str = "main") -> dict[str, Any]:
    statuses = pod_obj["status"].get("containerStatuses") or []
    status = next(s for s in statuses if s["name"] == name)
    return dict(status["state"].get("terminated") or {})
