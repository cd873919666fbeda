"""A result file's provenance header as ``bench.report.run_header`` writes it, for the benches' render tests."""

from __future__ import annotations

from typing import Any


def header(path: str, **parameters: Any) -> dict[str, Any]:
    """The fields ``bench.report.measured`` reads (machine, CPU flags, date, commit), ``path`` and ``parameters``."""
    return {
        "date": "2026-12-02",
        "machine": "x86_64, 2 cores, no GPU",
        "cpu_model": "AMD EPYC",
        "cpu_flags": ["avx2", "fma"],
        "commit": "abc1234",
        "dirty": False,
        "path": path,
        "parameters": parameters,
    }
