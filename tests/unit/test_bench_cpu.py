"""``make bench`` records CPU per query by server process at each load level (``bench.cpu``), and its table shows the c=16 level."""

from __future__ import annotations

import os
from typing import Any

import pytest

from bench.cpu import cpu_lines
from bench.report import markdown
from bench.run import unique_sweep
from tests.support.bench_reports import header

pytestmark = pytest.mark.torch  # bench.run imports the export (export.main: transformers)


def burn(_text: str) -> None:
    """A request whose server is this process: about a millisecond of CPU each."""
    sum(i * i for i in range(20_000))


def test_each_level_records_cpu_per_query_by_process() -> None:
    queries = [f"query {i}" for i in range(40)]
    sweep, sent = unique_sweep(burn, queries, (1, 4), 4, 30.0, {"gateway": os.getpid()})
    assert [level["concurrency"] for level in sweep] == [1, 4]
    assert all(set(level["cpu_ms_per_query"]) == {"gateway"} for level in sweep)
    assert all(level["cpu_ms_per_query"]["gateway"] >= 0 for level in sweep)
    assert sum(len(level) for level in sent) == 4 + 8


def level(concurrency: int, cpu: dict[str, float] | None) -> dict[str, Any]:
    figures: dict[str, Any] = {"concurrency": concurrency, "requests": 48, "errors": 0, "p50_ms": 50.0, "p95_ms": 80.0, "p99_ms": 95.0, "qps": 120.0}
    return {**figures, "cpu_ms_per_query": cpu} if cpu is not None else figures


def report(with_cpu: bool) -> dict[str, Any]:
    ours = {"gateway": 1.25, "triton": 9.5, "milvus": 2.0}
    theirs = {"baseline": 30.0, "milvus": 2.5}
    return {
        **header("bench/results/x.json", mode="quick"),
        "model": "random ViT-B/32",
        "search": {
            "10000": {
                "ours_int8": {"unique": [level(1, None), level(16, ours if with_cpu else None)], "cached_c1": level(1, None), "gateway_rss_mb": 200.0},
                "baseline": {"unique": [level(1, None), level(16, theirs if with_cpu else None)]},
            }
        },
        "ratios": {},
        "recall_at_10": {"10000": {"64": 0.99}},
        "reindex": {},
        "encoder": {},
    }


def test_the_table_shows_the_c16_cpu_of_each_stack() -> None:
    lines = cpu_lines(report(with_cpu=True))
    assert "| 10,000 | ours_int8 | 120.0 | 95 | 1.25 | 9.50 | 2.00 | 12.75 |" in lines
    assert "| 10,000 | baseline | 120.0 | 95 | 30.00 | - | 2.50 | 32.50 |" in lines
    assert "\n".join(lines) in markdown(report(with_cpu=True))


def test_a_run_without_cpu_figures_renders_as_before() -> None:
    assert cpu_lines(report(with_cpu=False)) == []
    assert "CPU per query at concurrency 16" not in markdown(report(with_cpu=False))
