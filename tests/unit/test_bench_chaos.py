"""The chaos campaign's verdict on reindex runs: off after the rerun is reported, and a violation only when one more run does not mend it."""

from __future__ import annotations

from typing import Any

import pytest

from bench.chaos import _brought_back, violations

pytestmark = pytest.mark.torch  # bench.chaos imports the export (bench.run, export.main: transformers)

OFF = {"missing": [], "extra": ["batch1/img_007.png"], "wrong_hash": [], "duplicate_rows": 1, "returncode": 0, "stderr": ""}


def report(*runs: dict[str, Any]) -> dict[str, Any]:
    seeds = {"sent": 1, "codes": {"OK": 1}, "not_ok": []}
    return {"fuzz": {"seeds": seeds, "codes": {}}, "flood": {"codes": {}}, "faults": [], "reindex": list(runs), "slow_clients": {"answered_meanwhile": 1}}


def test_a_run_the_next_run_mends_is_reported_not_a_violation() -> None:
    runs: list[dict[str, Any]] = [{"run": 0, "exact": True}, {"run": 2, "exact": False, "detail": OFF, "next_run": {"exact": True, "rows": 15}}]
    assert violations(report(*runs)) == []
    assert (
        _brought_back(runs)
        == "; the other 1 held 1 rows of deleted files, 1 second rows of an id, 0 missing, 0 old hashes, and the next run made it exact in 1 of 1"
    )


def test_a_run_that_stays_off_is_a_violation() -> None:
    run = {"run": 2, "exact": False, "detail": OFF, "next_run": {"exact": False, "rows": 17, "detail": OFF}}
    assert [line.split(":")[0] for line in violations(report(run))] == ["reindex run 2 is not exact"]
    assert _brought_back([{"run": 0, "exact": True}]) == ""


@pytest.mark.parametrize("fault", [{"missing": ["batch0/img_001.png"]}, {"wrong_hash": ["batch0/img_001.png"], "extra": []}, {"returncode": 4}])
def test_a_missing_row_an_old_hash_or_a_failed_run_stays_a_violation_whatever_the_next_run(fault: dict[str, Any]) -> None:
    run = {"run": 1, "exact": False, "detail": {**OFF, **fault}, "next_run": {"exact": True, "rows": 15}}
    assert len(violations(report(run))) == 1
