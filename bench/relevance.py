"""``make bench-relevance``: the shapes demo's numbers, with the machine, date and commit, as JSON.

It runs ``t2i shapes-demo`` (training, or its cache) and writes
``bench/results/<date>-<label>-relevance.json``: P@K before and after training, per query class,
the exact reference, index recall, and fp32 against int8. ``docs/relevance.md`` quotes it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.report import ROOT, run_header
from t2i.shapes_demo import run_shapes_demo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "shapes-demo", help="the demo's data folder (its cache included)")
    parser.add_argument("--retrain", action="store_true", help="train even when the cached model matches")
    parser.add_argument("--label", default="vm", help="the machine's name in the file name (default vm)")
    args = parser.parse_args()
    summary = run_shapes_demo(args.work, retrain=args.retrain)
    report = {**run_header(), **summary}
    out = ROOT / "bench" / "results" / f"{time.strftime('%Y-%m-%d')}-{args.label}-relevance.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
