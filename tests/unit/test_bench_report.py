"""The bench's own rules: distinct queries at every load level, the overload knee, provenance in every report, and verdicts from the main run."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bench.docs_tables import MAIN_RUN, load
from bench.overload import knee, render
from bench.queries import check_distinct, distinct_queries, sentences
from bench.report import PROVENANCE, measured, provenance_gaps, run_header
from bench.run import requests_at, unique_sweep
from bench.targets import at_million, cache_hit, memory, speedup

pytestmark = pytest.mark.torch  # bench.overload imports the export (bench.run, export.main: transformers)

FULL_LEVELS, FULL_PER_LEVEL = (1, 4, 16, 64), 200  # make bench (full): 200, 400, 1,000 and 3,400 requests


def test_full_mode_levels_never_repeat_a_query() -> None:
    total = sum(requests_at(FULL_PER_LEVEL, c) for c in FULL_LEVELS)
    sent_texts: list[str] = []
    sweep, sent = unique_sweep(sent_texts.append, distinct_queries(total), FULL_LEVELS, FULL_PER_LEVEL, 60)
    assert [len(level) for level in sent] == [200, 400, 1000, 3400] == [level["requests"] for level in sweep]
    assert check_distinct(sent) == total == len(set(sent_texts)) == 5000


def test_the_old_scheme_of_queries_modulo_the_sentences_is_refused() -> None:
    # bench.run full mode before: level queries drawn as sentences[(offset + i) % 1,680].
    queries, offset, levels = sentences(), 0, []
    for c in FULL_LEVELS:
        count = requests_at(FULL_PER_LEVEL, c)
        levels.append([queries[(offset + i) % len(queries)] for i in range(count)])
        offset += count
    with pytest.raises(ValueError, match="sent 3320 repeated queries"):  # 3,320 of c=64's 3,400 requests repeat earlier ones
        check_distinct(levels)
    with pytest.raises(ValueError, match="too few"):
        unique_sweep(lambda text: None, queries, FULL_LEVELS, FULL_PER_LEVEL, 60)


def test_distinct_queries_go_on_past_the_combinations() -> None:
    many = distinct_queries(25_000)
    assert len(set(many)) == 25_000
    assert many[:3] == distinct_queries(3)  # deterministic
    with pytest.raises(ValueError, match="repeated"):
        check_distinct([["a dog", "a cat"], ["a dog"]])


def level(concurrency: int, qps: float) -> dict[str, float]:
    return {"concurrency": concurrency, "qps": qps, "p50_ms": 1.0, "p99_ms": 2.0}


def test_the_knee_is_the_first_level_at_ninety_percent_of_the_peak_with_its_own_throughput() -> None:
    plateau = [level(1, 10), level(2, 20), level(4, 38), level(8, 40), level(16, 41), level(32, 40)]
    assert knee(plateau) == {"concurrency": 4, "qps": 38, "peak_concurrency": 16, "peak_qps": 41, "at_sweep_end": False}
    rising = [level(1, 27), level(2, 36), level(4, 46), level(8, 50), level(16, 50), level(32, 68)]  # the committed sweep, rounded
    assert knee(rising) == {"concurrency": 32, "qps": 68, "peak_concurrency": 32, "peak_qps": 68, "at_sweep_end": True}
    with pytest.raises(ValueError, match="empty sweep"):
        knee([])


def test_the_overload_table_states_the_knee_and_the_old_runs_multiple_of_it() -> None:
    text = render(load("bench/results/2026-11-27-vm-overload.json"))
    assert "Knee (the smallest swept concurrency whose throughput reaches 90% of the sweep's highest): **c=32, 68 q/s**" in text
    assert "where c=4 measured 46 q/s" in text and "16 clients are 0.5× the knee" in text
    assert "| shipped (bound 16) | 16 (0.5×) |" in text and "saturation at 4 clients (68 q/s" not in text


def test_every_report_header_records_its_provenance() -> None:
    header = run_header(parameters={"size": 10})
    assert provenance_gaps(header) == [] and set(PROVENANCE) <= set(header)
    assert isinstance(header["dirty"], bool) and header["cpu_model"] and header["parameters"] == {"size": 10}
    assert header["dirty"] == bool(header["changed_files"])
    line = measured(header)
    assert header["commit"] in line and header["cpu_model"] in line and "legacy" not in line


def test_a_legacy_file_says_what_it_lacks() -> None:
    report: dict[str, Any] = {"date": "2026-11-27", "machine": "x86_64, 2 cores", "commit": "abc1234", "legacy": {"committed_in": "def5678 on 2026-11-27"}}
    line = measured(report)
    assert line == (
        "Measured 2026-11-27 on x86_64, 2 cores, commit abc1234 [legacy record: no dirty flag, CPU model, CPU flags or parameters recorded; "
        "committed in def5678 on 2026-11-27; not reproducible here]"
    )


def main_run() -> dict[str, Any]:
    return load(MAIN_RUN)


def test_verdicts_come_from_the_main_run() -> None:
    report = main_run()
    assert at_million(report) == ("int8 20.6 ms, fp32 33.6 ms", "not met")  # the ef sweep's 18.0 ms is not the verdict
    assert cache_hit(report) == ("int8 2.97 ms, fp32 2.87 ms", "met")
    assert speedup(report)[1] == "met at c=16, 64; not at c=1, 4"
    assert memory(report)[1] == "memory met, but the load was 72% of saturation, not 80%"
    faster = copy.deepcopy(report)
    next(lv for lv in faster["search"]["1000000"]["ours_int8"]["unique"] if lv["concurrency"] == 1)["p50_ms"] = 18.0
    assert at_million(faster)[1] == "met"


def test_the_main_run_is_labelled_with_its_overrides() -> None:
    from bench.report import markdown

    report = main_run()
    text = markdown(report)
    assert "Mode `quick`; overridden: `--sizes` 10000,100000,1000000" in text and "c=64 680 requests, each capped at 20 s" in text
    # The derived levels are the ones the file's own request counts show (ours sent every request of each level).
    derived = report["legacy"]["derived_parameters"]["requests_per_level"]
    for stacks in report["search"].values():
        for name in ("ours_fp32", "ours_int8"):
            assert [lv["requests"] for lv in stacks[name]["unique"]] == list(derived.values())
