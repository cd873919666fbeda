"""CPU time per query by server process over one load level, for ``make bench`` (``bench.run``) and its table.

The gateway's own CPU per query is the cost that scales with traffic once the towers run on a GPU
(issue 23 asks for at most 1.5 ms at 16 clients): ``bench.run`` records it at every load level of
ours, beside Triton's and Milvus's, and the baseline server's at the same levels in the same run.
``bench.gateway_cpu`` measures it on its own, against an older gateway, with a py-spy profile.
"""

from __future__ import annotations

import os
from typing import Any

from bench.procs import cpu_seconds

CONCURRENCY = 16  # the level the table shows


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each named process tree now (this process alone for itself: the servers are its children)."""
    own = os.getpid()
    return {name: cpu_seconds(pid, pid != own) for name, pid in pids.items()}


def cpu_ms_per_query(before: dict[str, float], pids: dict[str, int], requests: int) -> dict[str, float]:
    """CPU ms per query of each process since ``before`` (``cpu_snapshot``), over ``requests`` answered."""
    after = cpu_snapshot(pids)
    return {name: (after[name] - before[name]) * 1000 / max(1, requests) for name in pids}


def _ms(cpu: dict[str, float], *names: str) -> str:
    """The first of ``names`` that ``cpu`` holds, to two decimals ("-" for none: the baseline has no Triton)."""
    return next((f"{cpu[name]:.2f}" for name in names if name in cpu), "-")


def cpu_lines(report: dict[str, Any]) -> list[str]:
    """The Markdown table of CPU per query at c=16 by stack and process (none for a report that has no such figures)."""
    rows = []
    for size, runs in report.get("search", {}).items():
        for name, result in runs.items():
            level = next((level for level in result.get("unique", []) if level["concurrency"] == CONCURRENCY and "cpu_ms_per_query" in level), None)
            if level is None:
                continue
            cpu = level["cpu_ms_per_query"]
            front, triton, milvus = (_ms(cpu, *names) for names in (("gateway", "baseline"), ("triton",), ("milvus",)))
            rows.append(f"| {int(size):,} | {name} | {level['qps']:.1f} | {level['p99_ms']:.0f} | {front} | {triton} | {milvus} | {sum(cpu.values()):.2f} |")
    if not rows:
        return []
    return [
        "",
        f"CPU per query at concurrency {CONCURRENCY}, by server process (`/proc`, each process tree; the same levels and queries as above). "
        "The first column is the gateway for ours and the FastAPI + PyTorch server (encoding included) for the baseline:",
        "",
        "| vectors | stack | qps | p99 ms | gateway / baseline server CPU ms/query | Triton CPU ms/query | Milvus CPU ms/query | all ms/query |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ]
