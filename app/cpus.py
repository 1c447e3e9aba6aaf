"""How many CPUs this process may use, which sizes the default thread counts.

``os.cpu_count()`` counts the host's cores. In a container limited to 2 CPUs on a 64-core
node it says 64, and thread pools sized from it would put 64 decode threads on 2 CPUs.
:func:`usable_cpus` takes the cores the process may run on (its affinity) and caps them by the
container's CPU quota, rounded up:

- cgroup v2: ``cpu.max`` holds ``"<quota> <period>"`` in microseconds, or ``"max <period>"``
  for no limit (Docker's and Kubernetes' ``cpus`` / ``limits.cpu``);
- cgroup v1: ``cpu/cpu.cfs_quota_us`` (``-1`` for no limit) and ``cpu/cpu.cfs_period_us``.

A container sees its own cgroup at ``/sys/fs/cgroup``. The standard library has no
quota-aware count (Python 3.13's ``os.process_cpu_count()`` reads the affinity only) and the
packages that have one (loky, via joblib) are far more than these few reads, hence this module.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Final

CGROUP_ROOT: Final[Path] = Path("/sys/fs/cgroup")


def cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when it has none or
    it cannot be read."""
    try:
        fields = (cgroup_root / "cpu.max").read_text().split()
    except OSError:
        fields = None
    try:
        if fields is not None:  # cgroup v2
            if len(fields) != 2 or fields[0] == "max":
                return None
            quota, period = int(fields[0]), int(fields[1])
        else:  # cgroup v1
            v1 = cgroup_root / "cpu"
            quota = int((v1 / "cpu.cfs_quota_us").read_text())
            period = int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity, capped by its cgroup's quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform (macOS)
        cpus = os.cpu_count() or 1
    quota = cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)
