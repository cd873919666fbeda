"""``make bench-relevance``: the shapes demo's numbers, with the machine, date and commit, as JSON.

It runs ``t2i shapes-demo --retrain`` (the seed project's experiment; each training is cached by
its inputs) and writes ``bench/results/<date>-<label>-relevance.json``: every model's P@K on the
evaluation and the shifted set, per query class, the exact reference, index recall, int8, the
example queries, and the recipe with each training's time. ``docs/relevance.md``'s tables are
rendered from it (``render``, ``render_classes``, ``render_shifted``, ``render_examples``;
``bench.docs_tables``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.report import ROOT, measured, run_header

MODELS = (
    ("random", "random weights (the seeded start)"),
    ("base", "base: web-style captions"),
    ("flyp", "FLYP"),
    ("flyp-hn", "FLYP + hard negatives"),
    ("shipped", "FLYP + hard negatives, wide generator + augment (shipped)"),
    ("shipped-int8", "shipped, int8 index and queries"),
)
CLASSES = (
    ("shape", 'shape ("a red circle")'),
    ("count", 'count ("two red circles")'),
    ("binding", 'binding ("a red circle and a blue square")'),
    ("held out", "held-out pairs (never trained on)"),
)


def render(report: dict[str, Any]) -> str:
    """The overall table of docs/relevance.md: each model's means over the evaluation set's queries, and index recall."""
    lines = [
        f"{measured(report)} (`{report['path']}`):",
        "",
        "| model | P@1 | P@10 | nDCG@10 | R@10 | MRR | mAP | P@10, exact search | index recall@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, name in MODELS:
        result = report["results"][f"{key}/eval"]
        overall = result["overall"]
        figures = [overall[m] for m in ("P@1", "P@10", "nDCG@10", "R@10", "MRR", "mAP")] + [result["exact"]["P@10"], result["index_recall"]["10"]]
        lines.append(f"| {name} | " + " | ".join(f"{value:.3f}" for value in figures) + " |")
    return "\n".join(lines)


def _class_rows(report: dict[str, Any], set_name: str) -> str:
    header = "| model | overall | " + " | ".join(name for _, name in CLASSES) + " |"
    lines = [header, "|---|---:|" + "---:|" * len(CLASSES)]
    for key, name in MODELS:
        result = report["results"][f"{key}/{set_name}"]
        cells = [result["overall"]["P@10"], *(result["classes"][c]["P@10"] for c, _ in CLASSES)]
        lines.append(f"| {name} | " + " | ".join(f"{value:.3f}" for value in cells) + " |")
    return "\n".join(lines)


def render_classes(report: dict[str, Any]) -> str:
    """P@10 by query class on the evaluation set (seed 2, the training renderer), one row per model."""
    return _class_rows(report, "eval")


def render_shifted(report: dict[str, Any]) -> str:
    """P@10 by query class on the shifted set (seed 3, drawn with settings training never used)."""
    return _class_rows(report, "shifted")


def render_summary(report: dict[str, Any]) -> str:
    """README's table: where and when it was measured, then P@10 by class on the evaluation set."""
    return f"{measured(report)} (`{report['path']}`):\n\n" + render_classes(report)


def render_examples(report: dict[str, Any]) -> str:
    """The example queries: the base's top 5 beside the shipped model's, each hit marked right or wrong."""
    from t2i.shapes_demo import side_by_side

    examples = report["examples"]
    return (
        "```\n" + side_by_side(examples["base"], examples["shipped"], ("base (web-style captions)", "shipped (FLYP, hard negatives, wide)")).rstrip() + "\n```"
    )


def main() -> int:
    from t2i.shapes_demo import run_shapes_demo

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "shapes-demo", help="the demo's data folder (its cache included)")
    parser.add_argument("--ship", action="store_true", help="write the new model over relevance/models/shapes")
    parser.add_argument("--label", default="vm", help="the machine's name in the file name (default vm)")
    args = parser.parse_args()
    summary = run_shapes_demo(args.work, retrain=True, ship=args.ship)
    report = {**run_header(parameters={"work": str(args.work), "ship": args.ship, "label": args.label}), **summary}
    out = ROOT / "bench" / "results" / f"{time.strftime('%Y-%m-%d')}-{args.label}-relevance.json"
    report["path"] = str(out.relative_to(ROOT))
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}; point bench/docs_tables.py's relevance tables at it and run python -m bench.docs_tables")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
