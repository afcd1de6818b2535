"""What a running process has used, read from ``/proc``: for the benchmarks that compare
kipsec's daemons with strongSwan's by the CPU they spend, which a loaded machine
stretches less than wall time."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time of every thread of ``pids`` (``/proc/PID/task/*/schedstat``: nanoseconds
    on a CPU, not tick-sampled), including the kernel work done in their context."""
    total = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError):
                total += int(stat.read_text().split()[0])
    return total / 1e9


__all__ = ["cpu_seconds"]
