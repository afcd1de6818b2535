"""What ``/proc`` says about one process: the benchmarks' CPU measure."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far: its own cost, whatever else the
    machine runs (wall times stretch with the load of a shared machine, this does not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
