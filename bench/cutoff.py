"""``python -m bench.cutoff``: the relevance cut-off's precision and recall on the shipped shapes model, as JSON.

It serves the shipped model (``relevance/models/shapes``) through the local stack, indexes the
shapes evaluation set (seed 2), and runs ``t2i eval --calibrate`` (``t2i.evaluate.calibrate``) at
each depth: the queries at even positions pick the threshold of best F1, the odd ones are held out
and measured with it, beside autocut and no cut. It writes
``bench/results/<date>-<label>-cutoff.json``; ``render`` draws docs/relevance.md's table from it.
The threshold of the last depth stays in the exported model's manifest under ``--work``; ``--ship``
keeps it in the shipped recipe too, so that ``make up`` serves ``CUTOFF_CALIBRATED``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.report import ROOT, measured, run_header

DEPTHS = (10, 100)


def measure(work: Path, depths: tuple[int, ...]) -> dict[str, Any]:
    """Each depth's calibration and held-out check on the shipped model (see the module docstring)."""
    from devstack.stack import LocalStack
    from reindex.main import reindex
    from relevance.evaluation import load_queries
    from t2i.client import GatewayClient
    from t2i.evaluate import calibrate
    from t2i.shapes_demo import shapes_repository

    repo, images = shapes_repository(work)
    queries = load_queries(images.parent / "queries.jsonl")
    stack = LocalStack(repo, work / "stacks" / "cutoff", gateway_address="127.0.0.1:0", alias="shapes")
    with stack:
        report = asyncio.run(reindex(stack.settings(), str(images), full=True, batch_size=64, workers=2, progress=False))
        print(report.summary(), flush=True)
        client = GatewayClient(stack.gateway_address, token=stack.token("read"), timeout_s=60)
        try:
            return {str(depth): calibrate(client, queries, depth, repo, None) for depth in depths}
        finally:
            client.close()


def ship(calibration: dict[str, Any]) -> None:
    """Keep ``calibration`` in the shipped model's recipe, which ``t2i up --shapes`` writes into the exported manifest."""
    from relevance import shipped

    recipe = shipped.read_recipe()
    recipe["calibration"] = calibration
    (shipped.SHIPPED / shipped.RECIPE).write_text(json.dumps(recipe, indent=1) + "\n")
    print(f"the threshold {calibration['threshold']:.4f} is in {shipped.SHIPPED / shipped.RECIPE}")


def render(report: dict[str, Any]) -> str:
    """Held-out precision, recall and hits kept of each cut-off, at each depth."""
    lines = [
        f"{measured(report)} (`{report['path']}`):",
        "",
        "| hits per query | cut-off | threshold | precision | recall | F1 | hits kept |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for depth, found in report["depths"].items():
        for name, cut in found["held_out"].items():
            threshold = "" if cut["threshold"] is None else f"{cut['threshold']:.3f}"
            row = [depth, name, threshold, f"{cut['precision']:.3f}", f"{cut['recall']:.3f}", f"{cut['f1']:.3f}", f"{cut['kept']} of {cut['kept_of']}"]
            lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "shapes-demo", help="the shapes demo's data folder")
    parser.add_argument("--label", default="vm", help="the machine's name in the file name (default vm)")
    parser.add_argument("--ship", action="store_true", help="write the deepest depth's threshold into relevance/models/shapes/recipe.json")
    args = parser.parse_args()
    depths = measure(args.work, DEPTHS)
    for found in depths.values():
        none = found["held_out"]["none"]["kept"]
        for cut in found["held_out"].values():
            cut["kept_of"] = none
    report = {**run_header(parameters={"work": str(args.work), "depths": list(DEPTHS), "label": args.label}), "depths": depths}
    out = ROOT / "bench" / "results" / f"{time.strftime('%Y-%m-%d')}-{args.label}-cutoff.json"
    report["path"] = str(out.relative_to(ROOT))
    out.write_text(json.dumps(report, indent=1))
    print(render(report))
    print(f"wrote {out}")
    if args.ship:
        ship(depths[str(DEPTHS[-1])]["calibration"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
