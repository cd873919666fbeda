"""``python -m bench.first_minute``: the first minute after the stack reports SERVING against the steady state.

A fresh replica (or the first minute after ``make up``) should run at the speed of one that has
served for a while. This measures both on one stack of the random ViT-B/32 (int8, as ``make
bench``) with ``--images`` photo-like JPEGs:

1. Setup (not measured): start Milvus, Triton and the gateway, index the JPEGs (a full run), stop
   all three. Milvus keeps its data: the collection is there when the stack starts again.
2. For each variant: start the whole stack again (new processes) and wait for the gateway's
   SERVING. At once (the *first minute*), send ``--queries`` SearchText one at a time, each a new
   sentence (the query cache never answers), then run a full reindex of the JPEGs in-process
   (``reindex.main.reindex``, as ``t2i reindex --full`` runs it: its img/s and its split). Then
   wait until ``--wait`` seconds after SERVING (300; ``--quick``: 20) and do the same again (the
   *steady state*). Wait until Milvus is idle (it indexes the new collection), stop the stack.

Variants: ``warm`` is the shipped repository (``model_warmup`` in each config, written by the
export from the manifest) and gateway (``T2I_WARMUP_S``, its own first search before SERVING);
``cold`` (``--variants warm,cold``, the default) is the same repository with the warm-up blocks
taken out and ``T2I_WARMUP_S=0``, as the code was before. Each variant's ratios are first minute
against its own steady state in the same run (SearchText p50 and the first query's latency,
steady / first: above 1 means the first minute was slower; reindex img/s, first / steady).

Writes ``bench/results/<date>-<label>-first-minute.json`` (``run_header``) and, unless
``--no-publish``, the table between the ``first-minute`` markers of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from bench.report import ROOT, measured, publish_docs, run_header

START, END = "<!-- first-minute:start -->", "<!-- first-minute:end -->"
ALIAS = "first_minute"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _link_or_copy(src: str, dst: str) -> None:
    """The ONNX files hard-linked (hundreds of MB), everything else copied (configs are rewritten)."""
    if src.endswith(".onnx"):
        Path(dst).hardlink_to(src)
    else:
        shutil.copy2(src, dst)


def cold_copy(repo: Path, target: Path) -> Path:
    """``repo`` without the warm-up blocks (hard links to its ONNX files; configs copied and stripped)."""
    from export.warmup import with_warmup

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(repo, target, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("__pycache__"))
    for config in [*target.glob("*/config.pbtxt"), *target.glob("*/configs/*.pbtxt")]:
        config.write_text(with_warmup(config.read_text(), ""))
    return target


def searches(stack: Any, count: int, offset: int) -> dict[str, Any]:
    """``count`` SearchText, one at a time, each a sentence never sent before; client-side milliseconds."""
    from t2i.client import GatewayClient

    times = []
    with GatewayClient(stack.gateway_address, timeout_s=60, token=stack.token("read")) as client:
        for i in range(count):
            start = time.perf_counter()
            client.search_text(f"a photo of scene {offset + i} with {i % 7} things", top_k=10)
            times.append((time.perf_counter() - start) * 1000)
    return {
        "count": count,
        "first_ms": round(times[0], 1),
        "p50_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "ms": [round(t, 1) for t in times],
    }


def reindex_once(stack: Any, folder: Path) -> dict[str, Any]:
    """A full reindex of ``folder`` through the stack: img/s and the summary line's split."""
    from reindex.main import reindex

    report = asyncio.run(reindex(stack.settings(), str(folder), True, 32, 2, False, keep_previous=False))
    return {
        "indexed": report.indexed,
        "seconds": round(report.seconds, 2),
        "img_per_s": round(report.images_per_second, 2),
        "pipeline_img_per_s": round(report.pipeline_images_per_second, 2),
        "listing_s": round(report.listing_seconds, 2),
        "pipeline_s": round(report.pipeline_seconds, 2),
        "finishing_s": round(report.finishing_seconds, 2),
    }


def window(stack: Any, folder: Path, queries: int, offset: int, ready_at: float) -> dict[str, Any]:
    """SearchText then a full reindex; when each began, in seconds after SERVING."""
    began = time.monotonic() - ready_at
    search = searches(stack, queries, offset)
    reindex_began = time.monotonic() - ready_at
    result = {"began_s": round(began, 1), "search": search, "reindex_began_s": round(reindex_began, 1), "reindex": reindex_once(stack, folder)}
    result["ended_s"] = round(time.monotonic() - ready_at, 1)
    return result


def settle(stack: Any, max_wait_s: float = 180.0) -> float:
    """Wait until Milvus is idle after a reindex (it builds the new collection's index in the background); the seconds waited."""
    from bench.procs import wait_for_quiet

    return round(wait_for_quiet(stack.milvus.pid or 0, max_wait_s), 1)


def warmup_lines(log_path: Path) -> list[str]:
    """The gateway's warm-up log lines (JSON lines: their messages)."""
    lines = []
    for line in log_path.read_text(errors="replace").splitlines() if log_path.is_file() else []:
        if "warm-up" in line:
            found = re.search(r'"msg": "([^"]*)"', line)
            lines.append(found.group(1) if found else line.strip())
    return lines


def variant(name: str, repo: Path, data: Path, folder: Path, args: argparse.Namespace, offset: int) -> dict[str, Any]:
    """Start the stack on ``data`` (its Milvus data kept), measure the first minute and the steady state, stop."""
    from devstack.stack import LocalStack

    env = {} if name == "warm" else {"T2I_WARMUP_S": "0"}
    started = time.monotonic()
    stack = LocalStack(repo, data, gateway_address="127.0.0.1:0", alias=ALIAS, extra_env=env)
    (data / "gateway.log").unlink(missing_ok=True)
    stack.start()
    ready_at = time.monotonic()
    try:
        log(f"{name}: SERVING {ready_at - started:.1f} s after the start")
        first = window(stack, folder, args.queries, offset, ready_at)
        log(f"{name}: first minute {first['search']['p50_ms']} ms p50 (first {first['search']['first_ms']} ms), {first['reindex']['img_per_s']} img/s")
        time.sleep(max(0.0, args.wait - (time.monotonic() - ready_at)))
        steady = window(stack, folder, args.queries, offset + args.queries, ready_at)
        log(f"{name}: steady {steady['search']['p50_ms']} ms p50 (first {steady['search']['first_ms']} ms), {steady['reindex']['img_per_s']} img/s")
        settle(stack)  # the next variant starts on a Milvus that has finished indexing this one's collection
    finally:
        stack.stop()
    return {
        "start_to_serving_s": round(ready_at - started, 1),
        "gateway_warmup_log": warmup_lines(data / "gateway.log"),
        "first_minute": first,
        "steady": steady,
        "ratios": ratios(first, steady),
    }


def ratios(first: dict[str, Any], steady: dict[str, Any]) -> dict[str, float]:
    """First minute against steady state: latency as first / steady (1 = no slower), speed as first / steady (1 = as fast)."""
    return {
        "search_p50_first_over_steady": round(first["search"]["p50_ms"] / steady["search"]["p50_ms"], 2),
        "first_query_first_over_steady": round(first["search"]["first_ms"] / steady["search"]["first_ms"], 2),
        "reindex_img_per_s_first_over_steady": round(first["reindex"]["img_per_s"] / steady["reindex"]["img_per_s"], 2),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from bench.data import photo_like_jpegs
    from bench.run import ensure_repo
    from devstack.stack import LocalStack

    repo = ensure_repo(args.data / "repo-int8", "int8")
    folder = args.data / f"first-minute-jpegs-{args.images}"
    photo_like_jpegs(folder, args.images)
    repos = {"warm": repo, "cold": cold_copy(repo, args.data / "repo-int8-cold")}
    data = args.data / "first-minute-stack"
    shutil.rmtree(data, ignore_errors=True)
    log(f"setup: indexing {args.images} JPEGs into a fresh Milvus under {data}")
    with LocalStack(repo, data, gateway_address="127.0.0.1:0", alias=ALIAS) as stack:
        setup = reindex_once(stack, folder)
        setup["milvus_quiet_after_s"] = settle(stack)
    result: dict[str, Any] = {"setup_reindex": setup, "variants": {}}
    for i, name in enumerate(args.variants):
        result["variants"][name] = variant(name, repos[name], data, folder, args, 10_000 * (i + 1))
    return result


def render(report: dict[str, Any]) -> str:
    """The first minute against the steady state, per variant, from a result file."""
    p = report["parameters"]
    rows = [
        "| variant | start to SERVING | SearchText first query (first min / steady) | SearchText p50 (first min / steady) | p50 ratio | reindex img/s (first min / steady) | img/s ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"warm": "warm (shipped: model_warmup, gateway warm-up)", "cold": "cold (no model_warmup, T2I_WARMUP_S=0)"}
    for name, v in report["variants"].items():
        f, s, r = v["first_minute"], v["steady"], v["ratios"]
        rows.append(
            f"| {names.get(name, name)} | {v['start_to_serving_s']} s | {f['search']['first_ms']:,.0f} / {s['search']['first_ms']:,.0f} ms |"
            f" {f['search']['p50_ms']:,.1f} / {s['search']['p50_ms']:,.1f} ms | {r['search_p50_first_over_steady']} |"
            f" {f['reindex']['img_per_s']:,.1f} / {s['reindex']['img_per_s']:,.1f} | {r['reindex_img_per_s_first_over_steady']} |"
        )
    return "\n".join(
        [
            f"{measured(report)} (`{report['path']}`); random ViT-B/32 int8, {p['images']} photo-like JPEGs; each variant restarts Milvus"
            f" (its collection kept), Triton and the gateway, then right after SERVING sends {p['queries']} SearchText one at a time (new"
            f" sentences) and runs a full reindex of the JPEGs, and does the same again {p['wait_s']} s after SERVING (the steady state):",
            "",
            *rows,
            "",
            "A ratio is first minute / steady state: 1.0 is the steady state's speed (p50: above 1 is slower; img/s: below 1 is slower).",
            *notes(report),
        ]
    )


def notes(report: dict[str, Any]) -> list[str]:
    """When each variant's first-minute window ran, and what the warm gateway logged before SERVING."""
    lines = [""]
    for name, v in report["variants"].items():
        f = v["first_minute"]
        lines.append(f"- {name}: the first-minute window ran from {f['began_s']} s to {f['ended_s']} s after SERVING (reindex from {f['reindex_began_s']} s).")
        if v.get("gateway_warmup_log"):
            lines.append(f"- {name}: the gateway logged before serving: " + "; ".join(f'"{line}"' for line in v["gateway_warmup_log"]) + ".")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--images", type=int, default=200, help="JPEGs reindexed in each window")
    parser.add_argument("--queries", type=int, default=40, help="SearchText in each window")
    parser.add_argument("--wait", type=float, default=300.0, help="seconds after SERVING when the steady-state window begins")
    parser.add_argument("--quick", action="store_true", help="a check run: 40 images, 10 queries, the steady state 20 s after SERVING")
    parser.add_argument("--variants", type=lambda text: [v for v in text.split(",") if v], default=["warm", "cold"], help="warm,cold (default both)")
    parser.add_argument("--label", default="vm", help="the machine's name in the file name (default vm)")
    parser.add_argument("--no-publish", action="store_true", help="write the JSON only, not docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.queries, args.wait = min(args.images, 40), min(args.queries, 10), min(args.wait, 20.0)
    unknown = set(args.variants) - {"warm", "cold"}
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")
    found = measure(args)
    parameters = {"images": args.images, "queries": args.queries, "wait_s": args.wait, "variants": args.variants, "quick": args.quick, "precision": "int8"}
    report = {**run_header(parameters=parameters), **found}
    path = ROOT / "bench" / "results" / f"{report['date']}-{args.label}-first-minute.json"
    report["path"] = str(path.relative_to(ROOT))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    if not args.no_publish:
        try:
            publish_docs(report, START, END, render)
        except ValueError:  # the first real run: the doc holds the section, not yet its markers
            print(render(report))
            print(
                f"docs/benchmarks.md has no {START} ... {END} yet: put the table above between them under 'The first minute after ready', "
                "and register it in bench/docs_tables.py (tests/unit/test_docs_tables.py compares)"
            )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
