"""``make bench-relevance``: the shapes demo's numbers, with the machine, date and commit, as JSON.

It runs ``t2i shapes-demo`` (training, or its cache) and writes
``bench/results/<date>-<label>-relevance.json``: P@K before and after training, per query class,
the exact reference, index recall, and fp32 against int8. ``docs/relevance.md``'s tables are
rendered from it (``render``, ``render_classes``; ``bench.docs_tables``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.report import ROOT, measured, run_header

MODELS = (
    ("random", "random weights (same architecture)"),
    ("trained", "trained, fp32"),
    ("int8-queries", "trained, int8 queries on the fp32 index"),
    ("int8", "trained, int8 index and queries"),
)
CLASSES = (
    ("shape", 'shape ("a red circle")'),
    ("count", 'count ("two red circles")'),
    ("binding", 'binding ("a red circle and a blue square")'),
    ("held out", "held-out pairs (never trained on)"),
)


def render(report: dict[str, Any]) -> str:
    """The before/after table of docs/relevance.md: the mean over the queries of each model, and index recall."""
    lines = [
        f"{measured(report)} (`{report['path']}`):",
        "",
        "| model | P@1 | P@10 | nDCG@10 | R@10 | MRR | mAP | P@10, exact search | index recall@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, name in MODELS:
        result = report["results"][key]
        overall = result["overall"]
        figures = [overall[m] for m in ("P@1", "P@10", "nDCG@10", "R@10", "MRR", "mAP")] + [result["exact"]["P@10"], result["index_recall"]["10"]]
        lines.append(f"| {name} | " + " | ".join(f"{value:.3f}" for value in figures) + " |")
    return "\n".join(lines)


def render_classes(report: dict[str, Any]) -> str:
    """P@10 / nDCG@10 by query class for random weights, trained fp32 and trained int8."""
    lines = ["| class | queries | random weights | trained fp32 | trained int8 |", "|---|---:|---:|---:|---:|"]
    for key, name in CLASSES:
        cells = [report["results"][model]["classes"][key] for model in ("random", "trained", "int8")]
        lines.append(f"| {name} | {cells[0]['queries']} | " + " | ".join(f"{c['P@10']:.3f} / {c['nDCG@10']:.3f}" for c in cells) + " |")
    return "\n".join(lines)


def main() -> int:
    from t2i.shapes_demo import run_shapes_demo

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "shapes-demo", help="the demo's data folder (its cache included)")
    parser.add_argument("--retrain", action="store_true", help="train even when the cached model matches")
    parser.add_argument("--label", default="vm", help="the machine's name in the file name (default vm)")
    args = parser.parse_args()
    summary = run_shapes_demo(args.work, retrain=args.retrain)
    report = {**run_header(parameters={"work": str(args.work), "retrain": args.retrain, "label": args.label}), **summary}
    out = ROOT / "bench" / "results" / f"{time.strftime('%Y-%m-%d')}-{args.label}-relevance.json"
    report["path"] = str(out.relative_to(ROOT))
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}; point bench/docs_tables.py's relevance tables at it and run python -m bench.docs_tables")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
