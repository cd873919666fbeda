"""Compare SearchText across ``bench.run`` reports of two commits on the same machine (before/after a change).

``python -m bench.compare BEFORE.json [BEFORE2.json ...] --after AFTER.json [AFTER2.json ...]``
writes a JSON report with every run's figures and the after/before ratios of their medians, and
prints a Markdown table. Runs should alternate (before, after, before, after) so that a drift of
the machine shows in both columns. Nothing here is a test assertion.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench.report import describe_flags, run_header

# (label, how to read it from one run's search[size][variant]); lower is better unless "qps".
METRICS = (
    ("c=1 p50 ms", lambda v: v["unique"][0]["p50_ms"]),
    ("c=1 p95 ms", lambda v: v["unique"][0]["p95_ms"]),
    ("c=16 qps", lambda v: next(level["qps"] for level in v["unique"] if level["concurrency"] == 16)),
    ("c=64 p50 ms", lambda v: next(level["p50_ms"] for level in v["unique"] if level["concurrency"] == 64)),
    ("cache hit p50 ms", lambda v: v["cached_c1"]["p50_ms"]),
)


def figures(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """``size -> variant -> metric -> [value per run]`` for our stack's variants."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in runs:
        for size, variants in run["search"].items():
            for variant, value in variants.items():
                if not variant.startswith("ours_"):
                    continue
                for label, read in METRICS:
                    out.setdefault(size, {}).setdefault(variant, {}).setdefault(label, []).append(float(read(value)))
    return out


RUN_FIELDS = ("path", "commit", "date", "dirty", "changed_files", "machine", "cpu_model", "cpu_flags", "load_average_at_start", "mode", "parameters")


def run_of(report: dict[str, Any]) -> dict[str, Any]:
    """What the comparison keeps of one run: where it is, and what it was measured on and with."""
    return {name: report[name] for name in RUN_FIELDS if name in report}


def runs_line(report: dict[str, Any]) -> str:
    """Which runs the table compares: each side's commits and run count, and the machine of the runs."""
    sides = []
    for side in ("before", "after"):
        runs = report[side]
        commits = sorted({str(run.get("commit")) for run in runs})
        dirty = {changed for run in runs if run.get("dirty") for changed in run.get("changed_files", [])}
        loads = [f"{run['load_average_at_start']:.1f}" for run in runs if "load_average_at_start" in run]
        sides.append(
            f"{side}: {len(runs)} run(s) of commit {', '.join(commits)}"
            + (f" (with local changes to {', '.join(sorted(dirty))})" if dirty else "")
            + (f", load average at start {', '.join(loads)}" if loads else "")
        )
    first = report["before"][0]
    if "machine" in first:
        cpu = [text for text in (first.get("cpu_model"), describe_flags(first["cpu_flags"]) if "cpu_flags" in first else None) if text]
        sides.append(f"measured {first.get('date', '?')} on {first['machine']}" + (f" ({'; '.join(cpu)})" if cpu else ""))
    return "Runs compared: " + "; ".join(sides) + "."


def compare(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """Both sides' figures and the ratio after/before of their medians."""
    old, new = figures(before), figures(after)
    rows = []
    for size in sorted(old, key=int):
        for variant in sorted(old[size]):
            for label, _ in METRICS:
                a, b = old[size][variant][label], new.get(size, {}).get(variant, {}).get(label, [])
                if b:
                    ratio = statistics.median(b) / statistics.median(a)
                    rows.append({"size": int(size), "variant": variant, "metric": label, "before": a, "after": b, "after_over_before": ratio})
    return {
        **run_header(
            parameters={"before": [r.get("path") for r in before], "after": [r.get("path") for r in after], "metrics": [label for label, _ in METRICS]}
        ),
        "before": [run_of(r) for r in before],
        "after": [run_of(r) for r in after],
        "rows": rows,
    }


def markdown(report: dict[str, Any]) -> str:
    """The comparison as a Markdown table."""
    lines = [runs_line(report), "", "| vectors | variant | metric | before | after | after / before |", "| ---: | --- | --- | --- | --- | ---: |"]
    for row in report["rows"]:
        before = ", ".join(f"{v:.1f}" for v in row["before"])
        after = ", ".join(f"{v:.1f}" for v in row["after"])
        lines.append(f"| {row['size']:,} | {row['variant'].removeprefix('ours_')} | {row['metric']} | {before} | {after} | {row['after_over_before']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    """Read the reports, write the comparison JSON, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, nargs="+", help="bench.run reports of the old commit")
    parser.add_argument("--after", type=Path, nargs="+", required=True, help="bench.run reports of the new commit")
    parser.add_argument("--out", type=Path, required=True, help="where to write the comparison JSON")
    args = parser.parse_args()
    # Each run is named by the file read here (a report records where it was first written).
    report = compare([{**json.loads(p.read_text()), "path": str(p)} for p in args.before], [{**json.loads(p.read_text()), "path": str(p)} for p in args.after])
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
