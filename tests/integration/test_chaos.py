"""The short fault and abuse campaign (``bench.chaos``, ``make chaos`` runs the full one) holds every invariant."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import FAULTS, SHORT, render, run_campaign


@pytest.mark.timeout(900)
def test_short_campaign_holds_every_invariant(tmp_path: Path) -> None:
    report = run_campaign(SHORT, tmp_path / "chaos")
    print(render(report))
    assert report["violations"] == []
    # The campaign did what it says, so an empty list of violations means something.
    assert [fault["fault"] for fault in report["faults"]] == list(FAULTS) * SHORT.rounds
    assert all(fault["during"] for fault in report["faults"])  # the load ran through each fault
    assert any(set(fault["during"]) - {"OK"} for fault in report["faults"])  # and the faults were felt
    assert len(report["reindex"]) == SHORT.reindex_runs and any(run["killed_after_s"] is not None for run in report["reindex"])
    assert report["fuzz"]["cases"] == SHORT.fuzz_cases and set(report["fuzz"]["by_method"]) >= {"SearchText", "UpsertImages", "ListLabels"}
    assert sum(report["flood"]["codes"].values()) == SHORT.flood and report["flood"]["codes"].get("OK") == SHORT.flood
    assert all(report["alive_at_end"].values())
