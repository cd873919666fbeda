"""The benchmark tables in docs/ are what the bench's code renders from the committed result files, and every result file has its provenance."""

from __future__ import annotations

import json
import re

import pytest

from bench.docs_tables import RESULTS, TABLES, Table, current, rendered
from bench.report import PROVENANCE, ROOT, provenance_gaps


@pytest.mark.torch  # the renderers import their benchmarks, most of which import the export (transformers, onnx, torch)
@pytest.mark.parametrize("table", TABLES, ids=lambda t: f"{t.doc}:{t.name}")
def test_the_table_re_renders_identically_from_its_result_file(table: Table) -> None:
    assert current(table) == rendered(table), f"run python -m bench.docs_tables (or point {table.name} at the right file)"


def test_every_marked_block_in_docs_and_the_readme_is_registered() -> None:
    registered = {(t.doc, t.name) for t in TABLES}
    docs = [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]
    found = {(str(doc.relative_to(ROOT)), name) for doc in docs for name in re.findall(r"<!-- ([\w-]+):start -->", doc.read_text())}
    assert found == registered


def test_every_table_reads_committed_result_files() -> None:
    for table in TABLES:
        for path in table.files:
            assert path.startswith(RESULTS) and (ROOT / path).is_file(), path


@pytest.mark.parametrize("path", sorted((ROOT / "bench" / "results").glob("*.json")), ids=lambda p: p.name)
def test_every_result_file_has_its_provenance_or_says_what_it_lacks(path: object) -> None:
    report = json.loads(path.read_text())  # type: ignore[attr-defined]
    gaps = provenance_gaps(report)
    if not gaps:
        assert isinstance(report["dirty"], bool) and report["parameters"], "a full record names its parameters"
        return
    legacy = report.get("legacy")
    assert legacy, f"missing {gaps} and no legacy note"
    assert legacy["missing"] == gaps and set(gaps) <= set(PROVENANCE)
    assert "not reproducible here" in legacy["note"].lower() and re.match(r"[0-9a-f]{7,} on \d{4}-\d{2}-\d{2}$", legacy["committed_in"])
