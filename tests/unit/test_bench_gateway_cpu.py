"""``bench.gateway_cpu``'s pieces that need no stack: the top list from py-spy's raw stacks, CPU by thread, the table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bench.gateway_cpu import render, source_env, thread_cpu, top_functions
from tests.support.bench_reports import header

pytestmark = pytest.mark.torch  # bench.gateway_cpu imports bench.run, which imports the export (export.main: transformers)

RAW = """\
Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:83);MilvusRows.search (core/milvus_rows.py:236) 30
BaseEventLoop._run_once (asyncio/base_events.py:1922);Handle._run (asyncio/events.py:84) 50
BaseEventLoop._run_once (asyncio/base_events.py:1922);EpollSelector.select (selectors.py:468) 20
"""


def test_the_top_list_counts_own_and_inclusive_samples(tmp_path: Path) -> None:
    raw = tmp_path / "stacks.txt"
    raw.write_text(RAW)
    top = top_functions(raw)
    assert top["samples"] == 100
    assert top["self_percent"][0] == ("Handle._run (events.py)", 50.0)
    assert ("MilvusRows.search (milvus_rows.py)", 30.0) in top["self_percent"]
    assert top["inclusive_percent"][0] == ("BaseEventLoop._run_once (base_events.py)", 70.0)


def test_thread_cpu_sums_this_process_threads() -> None:
    by_name = thread_cpu(os.getpid())
    assert by_name and all(seconds >= 0 for seconds in by_name.values())


def test_a_baseline_tree_runs_before_this_checkout_on_the_path(tmp_path: Path) -> None:
    assert source_env(None) == {}
    assert source_env(tmp_path) == {"PYTHONPATH": str(tmp_path), "PYTHONSAFEPATH": "1"}


def summary(gateway_ms: float) -> dict[str, Any]:
    kind = {"gateway_cpu_ms_per_query": gateway_ms, "triton_cpu_ms_per_query": 9.0, "milvus_cpu_ms_per_query": 2.0, "p99_ms": 180.0, "qps": 60.0}
    return {"unique": kind, "cached": {**kind, "triton_cpu_ms_per_query": 0.0}}


def test_the_table_has_a_row_per_gateway_and_kind_and_the_floor() -> None:
    report = {
        **header("bench/results/x-gateway-cpu.json", requests=320, rounds=2),
        "size": 5000,
        "gateways": {"baseline 1c3004c": {"summary": summary(4.5)}, "this checkout": {"summary": summary(3.25)}},
        "floor": {"requests": 1280, "rounds": {"bare": [{}, {}]}, "median_cpu_ms_per_query": {"bare": 0.8, "interceptors": 0.9}},
    }
    text = render(report)
    assert "| baseline 1c3004c | unique | 4.50 | 9.00 | 2.00 | 180 | 60 |" in text
    assert "| this checkout | cached | 3.25 | 0.00 | 2.00 | 180 | 60 |" in text
    assert "costs 0.80 ms of CPU per query bare and 0.90 ms behind the gateway's four interceptors" in text
