"""The CPU and memory this process may use, as its container's cgroup limits them.

``os.cpu_count()`` in a pod is the node's core count (64 on a big node, for a container limited
to 1 CPU), and nothing in Python reports the memory limit; sizing thread pools and in-flight
work from them oversubscribes the container until the kernel throttles or OOM-kills it. This
reads cgroup v2 (``cpu.max``, ``memory.max``) or v1 (``cpu.cfs_quota_us``/``cpu.cfs_period_us``,
``memory.limit_in_bytes``), and the CPU affinity mask, and takes the smallest.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

#: cgroup v1 reports "no limit" as a huge number (page-rounded 2**63 - 1).
_UNLIMITED_V1 = 1 << 60


@dataclass(frozen=True)
class ContainerLimits:
    cpus: float  # CPUs this process may use (fractional under a CFS quota)
    memory_bytes: int | None  # the container's memory limit; None when unlimited

    @property
    def whole_cpus(self) -> int:
        """At least 1: how many threads of CPU-bound work run in parallel."""
        return max(1, math.floor(self.cpus))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_cpus(root: Path) -> float | None:
    v2 = _read(root / "cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota, period = (
        _read(root / "cpu" / "cpu.cfs_quota_us"),
        _read(root / "cpu" / "cpu.cfs_period_us"),
    )
    if quota and period and int(quota) > 0 and int(period) > 0:
        return int(quota) / int(period)
    return None


def _cgroup_memory(root: Path) -> int | None:
    v2 = _read(root / "memory.max")
    if v2:
        return None if v2 == "max" else int(v2)
    v1 = _read(root / "memory" / "memory.limit_in_bytes")
    if v1 and int(v1) < _UNLIMITED_V1:
        return int(v1)
    return None


def read_container_limits(cgroup_root: str | Path = "/sys/fs/cgroup") -> ContainerLimits:
    """This process's limits; ``cgroup_root`` is a parameter so tests can point it elsewhere."""
    root = Path(cgroup_root)
    try:
        visible = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        visible = float(os.cpu_count() or 1)
    try:
        quota = _cgroup_cpus(root)
    except ValueError:
        quota = None
    try:
        memory = _cgroup_memory(root)
    except ValueError:
        memory = None
    return ContainerLimits(cpus=min(visible, quota) if quota else visible, memory_bytes=memory)
