"""bench.compare: the ratios of the medians, and the provenance of the runs it compares."""

from __future__ import annotations

from typing import Any

from bench.compare import compare, markdown


def run(commit: str, p50: float, **extra: Any) -> dict[str, Any]:
    """A bench.run report holding one variant's SearchText figures at 10k vectors."""
    levels = [{"concurrency": 1, "p50_ms": p50, "p95_ms": p50 * 2}, {"concurrency": 16, "qps": 100 / p50}, {"concurrency": 64, "p50_ms": p50 * 10}]
    return {
        "commit": commit,
        "date": "2026-12-01",
        "path": f"{commit}.json",
        "search": {"10000": {"ours_int8": {"unique": levels, "cached_c1": {"p50_ms": 1.0}}}},
        **extra,
    }


def test_ratios_are_of_the_medians_and_the_runs_are_named() -> None:
    machine = {"machine": "x86_64, 2 cores, no GPU", "cpu_model": "AMD EPYC", "cpu_flags": ["avx2", "fma"]}
    report = compare(
        [run("old", 20.0, load_average_at_start=5.76, **machine), run("old", 30.0, load_average_at_start=1.0, **machine)],
        [run("new", 10.0, dirty=True, changed_files=["bench/run.py"], **machine), run("new", 12.0, **machine), run("new", 50.0, **machine)],
    )
    p50 = next(row for row in report["rows"] if row["metric"] == "c=1 p50 ms")
    assert p50["before"] == [20.0, 30.0] and p50["after"] == [10.0, 12.0, 50.0]
    assert p50["after_over_before"] == 12.0 / 25.0
    assert report["before"][0]["cpu_flags"] == ["avx2", "fma"] and report["after"][0]["changed_files"] == ["bench/run.py"]
    first = markdown(report).splitlines()[0]
    assert first.startswith(
        "Runs compared: before: 2 run(s) of commit old, load average at start 5.8, 1.0; after: 3 run(s) of commit new (with local changes to bench/run.py);"
    )
    assert "measured 2026-12-01 on x86_64, 2 cores, no GPU (AMD EPYC; avx2, fma" in first
    assert "| 10,000 | int8 | c=1 p50 ms | 20.0, 30.0 | 10.0, 12.0, 50.0 | 0.48 |" in markdown(report)
