"""The CPUs this pod may use: its cgroup CPU quota (a Kubernetes CPU limit), not the node's
core count, within the cores the process may run on. Sizes the preprocessing pool and Arrow's
own thread pool (which would otherwise start one thread per core of the node).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def pod_cpus(cgroup: Path = CGROUP) -> int:
    """CPUs this process may use: the cgroup CPU quota (rounded up) within its affinity."""
    cores = len(os.sched_getaffinity(0))
    quota = _cgroup_quota(cgroup)
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def _cgroup_quota(cgroup: Path) -> float | None:
    """CPUs the quota allows (cgroup v2 `cpu.max`, else v1 `cfs_quota_us`); None: no limit."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for directory in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            quota_us = int((cgroup / directory / "cpu.cfs_quota_us").read_text())
            period_us = int((cgroup / directory / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    return None
