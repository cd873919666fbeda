"""What the benchmark reads about its server processes: memory, CPU time, and when they are quiet."""

from __future__ import annotations

import os
import time
from pathlib import Path


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int, descendants: bool = True) -> float:
    """User plus system CPU seconds of ``pid`` and, by default, its live descendants (Triton's python stubs are children)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    family = {pid}
    for _ in range(4 if descendants else 0):  # children, grandchildren, ...
        family |= {child for child, (parent, _) in stats.items() if parent in family}
    return sum(stats.get(member, (0, 0.0))[1] for member in family)


def wait_for_quiet(pid: int, max_wait_s: float, cores: float = 0.15, window_s: float = 5.0, windows: int = 3) -> float:
    """Wait until ``pid`` uses under ``cores`` of CPU in ``windows`` windows of ``window_s`` in a row (or ``max_wait_s`` passed).

    Returns the seconds waited.

    After a bulk load Milvus compacts segments and rebuilds their indexes for minutes; a fixed pause
    either wastes time or measures that work instead of search.
    """
    start, quiet = time.monotonic(), 0
    while time.monotonic() - start < max_wait_s and quiet < windows:
        before = cpu_seconds(pid)
        time.sleep(window_s)
        quiet = quiet + 1 if (cpu_seconds(pid) - before) / window_s < cores else 0
    return time.monotonic() - start
