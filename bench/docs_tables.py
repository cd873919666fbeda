"""Every benchmark table in ``docs/``, rendered by the bench's own code from a committed result file.

Each ``Table`` names a document, the marker pair around its table (``<!-- NAME:start -->`` and
``<!-- NAME:end -->``), the result files it is rendered from and the function that renders them.
``python -m bench.docs_tables`` rewrites every table from its files; ``--check`` only compares and
exits 1 when a document differs (``tests/unit/test_docs_tables.py`` does the same). A benchmark
run writes a new file and its own table; point the entry here at the new file so that the test
keeps the two together.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import ROOT, replace_between

RESULTS = "bench/results/"


@dataclass(frozen=True)
class Table:
    """One rendered table: ``doc``'s block between the ``name`` markers is ``render(*files)``."""

    doc: str
    name: str
    files: tuple[str, ...]
    render: str  # "module:function"; imported when rendered (bench.gpu needs torch)

    @property
    def markers(self) -> tuple[str, str]:
        return f"<!-- {self.name}:start -->", f"<!-- {self.name}:end -->"


MAIN_RUN = RESULTS + "2026-11-27-vm.json"
RELEVANCE_RUN = RESULTS + "2026-12-01-vm-relevance.json"
GPU_RUNS = tuple(RESULTS + f"2026-11-27-h100-gpu{suffix}.json" for suffix in ("", "-run1", "-run2"))
TABLES = (
    Table("docs/benchmarks.md", "bench", (MAIN_RUN,), "bench.report:markdown"),
    Table("docs/benchmarks.md", "floor", (RESULTS + "2026-11-26-vm-floor.json",), "bench.floor:render"),
    Table("docs/benchmarks.md", "levers", (RESULTS + "2026-11-27-vm-levers.json",), "bench.levers:render"),
    Table("docs/benchmarks.md", "ef", (RESULTS + "2026-11-27-vm-ef.json",), "bench.ef_sweep:render"),
    Table("docs/benchmarks.md", "targets", (MAIN_RUN,), "bench.targets:render"),
    Table("docs/benchmarks.md", "gpu", GPU_RUNS[:1], "bench.gpu:render"),
    Table("docs/benchmarks.md", "core-refactor", (RESULTS + "2026-11-27-vm-core-refactor.json",), "bench.compare:markdown"),
    Table("docs/benchmarks.md", "seams", (RESULTS + "2026-12-01-vm-seams.json",), "bench.compare:markdown"),
    Table("docs/benchmarks.md", "tiers", (RESULTS + "2026-11-27-vm-tiers.json",), "bench.tiers:render"),
    Table("docs/benchmarks.md", "gateway-cpu", (RESULTS + "2026-12-02-vm-gateway-cpu.json",), "bench.gateway_cpu:render"),
    Table("docs/benchmarks.md", "gateway-parts", (RESULTS + "2026-12-02-vm-gateway-parts.json",), "bench.gateway_parts:render"),
    Table("docs/benchmarks.md", "query-size", (RESULTS + "2026-11-27-vm-query-size.json",), "bench.query_size:render"),
    Table("docs/benchmarks.md", "overload", (RESULTS + "2026-11-27-vm-overload.json",), "bench.overload:render"),
    Table("docs/benchmarks.md", "pages", (RESULTS + "2026-12-01-vm-pages.json",), "bench.pages:render"),
    Table("docs/benchmarks.md", "duplicates", (RESULTS + "2026-12-01-vm-duplicates.json",), "bench.duplicates:render"),
    Table("docs/benchmarks.md", "search-terms", (RESULTS + "2026-12-01-vm-search-terms.json",), "bench.search_terms:render"),
    Table("docs/benchmarks.md", "scale", (RESULTS + "2026-12-02-vm-scale-100000.json",), "bench.scale:render"),
    Table("docs/reliability.md", "chaos", (RESULTS + "2026-11-27-vm-chaos.json",), "bench.chaos:render"),
    Table("docs/relevance.md", "relevance", (RELEVANCE_RUN,), "bench.relevance:render"),
    Table("docs/relevance.md", "relevance-classes", (RELEVANCE_RUN,), "bench.relevance:render_classes"),
    Table("docs/relevance.md", "relevance-shifted", (RELEVANCE_RUN,), "bench.relevance:render_shifted"),
    Table("docs/relevance.md", "relevance-examples", (RELEVANCE_RUN,), "bench.relevance:render_examples"),
    Table("docs/relevance.md", "cutoff", (RESULTS + "2026-12-01-vm-cutoff.json",), "bench.cutoff:render"),
    Table("README.md", "shapes-examples", (RELEVANCE_RUN,), "bench.relevance:render_examples"),
    Table("README.md", "shapes-classes", (RELEVANCE_RUN,), "bench.relevance:render_summary"),
    Table("docs/vector-store.md", "vector-store", (RESULTS + "vector-store-2026-12-01-vm.json",), "bench.vector_store:render"),
    Table(
        "docs/deploy.md",
        "capacity",
        (RESULTS + "2026-11-27-vm-tiers.json", RESULTS + "2026-11-27-vm-ef.json", *GPU_RUNS),
        "bench.tiers:capacity_inputs",
    ),
)


def load(path: str) -> dict[str, Any]:
    """A committed result file, with its own path (as the renderers print it) when it does not record one."""
    report: dict[str, Any] = json.loads((ROOT / path).read_text())
    if not str(report.get("path", "")).startswith(RESULTS):
        report["path"] = path  # files first written elsewhere (/tmp/...) are committed here
    return report


def rendered(table: Table) -> str:
    """What ``table``'s block should hold."""
    module, function = table.render.split(":")
    render = getattr(importlib.import_module(module), function)
    return str(render(*(load(path) for path in table.files)))


def current(table: Table) -> str:
    """What ``table``'s block holds now.

    Raises:
        ValueError: the document lacks the markers.
    """
    start, end = table.markers
    text = (ROOT / table.doc).read_text()
    if start not in text or end not in text.partition(start)[2]:
        raise ValueError(f"{table.doc} lacks the markers {start} ... {end}")
    return text.partition(start)[2].partition(end)[0].strip("\n")


def table_for(doc: Path, start: str) -> Table | None:
    """The registered table of ``doc`` behind the marker ``start``, if any."""
    for table in TABLES:
        if (ROOT / table.doc).resolve() == doc.resolve() and table.markers[0] == start:
            return table
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a document differs")
    args = parser.parse_args(argv)
    differ = 0
    for table in TABLES:
        want, have = rendered(table), current(table)
        if want == have:
            continue
        differ += 1
        if args.check:
            print(f"{table.doc} [{table.name}] differs from {', '.join(table.files)}:")
            print("\n".join(difflib.unified_diff(have.splitlines(), want.splitlines(), "docs", "rendered", lineterm="")))
        else:
            replace_between(ROOT / table.doc, *table.markers, want)
            print(f"rewrote {table.doc} [{table.name}] from {', '.join(table.files)}")
    return 1 if args.check and differ else 0


if __name__ == "__main__":
    sys.exit(main())
