"""CPU cost per query of each tier (gateway, Triton, Milvus) on the local stack: the capacity plan's inputs.

Starts Milvus, Triton (fp32 and int8 random ViT-B/32 towers in turn) and one gateway on loopback,
fills a collection of ``--size`` clustered vectors, and runs SearchText at concurrency 16 with
unique queries (every query encoded) and with one repeated query (the embedding cache answers:
gateway and Milvus only). CPU seconds come from /proc for each process tree. Writes
bench/results/<date>-<host>-tiers.json and the table between the markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

from bench.data import clustered_vectors
from bench.levers import measure_search
from bench.procs import wait_for_quiet
from bench.queries import sentences
from bench.report import measured, publish, run_header
from bench.run import ROOT, Gateway, ensure_repo, fill_collection, log
from core.index import ImageIndex
from core.logs import configure_logging
from core.manifest import Manifest
from core.records import HnswParams, ModelStamp
from devstack.milvus import local_uri, start_milvus
from devstack.triton import start_triton

START, END = "<!-- tiers:start -->", "<!-- tiers:end -->"
TIERS = ("gateway", "triton", "milvus")


def render(report: dict[str, Any]) -> str:
    """The Markdown table of CPU ms per query by tier."""
    lines = [
        f"{measured(report)}, {report['size']:,} vectors, SearchText at concurrency 16 ({report['path']}):",
        "",
        "| towers | queries | queries/s | p99 ms | gateway CPU ms/query | Triton CPU ms/query | Milvus CPU ms/query |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, run in report["runs"].items():
        for kind in ("unique", "cached"):
            cpu, load = run[kind]["cpu_ms_per_query"], run[kind]["load"]
            lines.append(f"| {name} | {kind} | {load['qps']:.0f} | {load['p99_ms']:.0f} | {cpu['gateway']:.2f} | {cpu['triton']:.2f} | {cpu['milvus']:.2f} |")
    return "\n".join(lines)


def _span(values: list[float], fmt: str, unit: str = " ms") -> str:
    low, high = min(values), max(values)
    return f"{low:{fmt}}{unit}" if f"{low:{fmt}}" == f"{high:{fmt}}" else f"{low:{fmt}}–{high:{fmt}}{unit}"


def capacity_inputs(tiers: dict[str, Any], ef: dict[str, Any], gpu: dict[str, Any], *gpu_runs: dict[str, Any]) -> str:
    """The inputs table of docs/deploy.md's capacity plan, from a tiers run, an ef sweep and the GPU runs (the first is the main one)."""
    runs = tiers["runs"]
    cpu = {(name, kind): runs[name][kind]["cpu_ms_per_query"] for name in runs for kind in ("unique", "cached")}
    ef_milvus = {size: [run["milvus_cpu_ms_per_query"] for run in result["runs"]["64"]] for size, result in ef["sizes"].items()}
    text, vision = gpu["text"], gpu["vision"]
    graph = [value for key, value in text.items() if key.startswith("b1_len") and key.endswith("_graph_ms")]
    decode = [run["cpu_decode"]["one_core_ms_per_image"] for run in (gpu, *gpu_runs)]
    lines = [
        "| figure | value | source |",
        "| --- | --- | --- |",
        f"| gateway CPU per query | {_span([cpu[(n, 'unique')]['gateway'] for n in runs], '.1f')} (encoded queries), "
        f"{_span([cpu[(n, 'cached')]['gateway'] for n in runs], '.1f')} (cache hits), at c=16 | `make bench-tiers`, `{tiers['path']}` |",
        f"| Milvus CPU per query (HNSW, ef 64) | {_span(ef_milvus.get('100000', [float('nan')]), '.1f')} at 100k and "
        f"{_span(ef_milvus.get('1000000', [float('nan')]), '.1f')} at 1M (`make bench-ef`); "
        f"{_span([cpu[(n, 'unique')]['milvus'] for n in runs], '.1f')} at {tiers['size']:,} in the `make bench-tiers` run | `{ef['path']}`, `{tiers['path']}` |",
        "| text tower on CPU (ViT-B/32, "
        + " / ".join(runs)
        + "), Triton's CPU per query | "
        + " / ".join(f"{cpu[(n, 'unique')]['triton']:.1f} ms" for n in runs)
        + f" | `make bench-tiers`, `{tiers['path']}` |",
        f"| text tower on an H100 | {_span(graph, '.2f')} per query as a CUDA graph; {text['b16_len16_queries_per_s'] / 1000:.1f}k queries/s at batch 16, "
        f"{text['b64_len16_queries_per_s'] / 1000:.1f}k at batch 64 | `{gpu['path']}` |",
        f"| vision tower on an H100 | {vision['b128_images_per_s'] / 1000:.1f}k img/s at batch 128 ({gpu['dtype']}); CPU decoding "
        f"{_span(decode, '.1f')} of one core per image | " + ", ".join(f"`{run['path']}`" for run in (gpu, *gpu_runs)) + " |",
        "| one vector | 512 × 4 B = 2 KiB (fp32) | |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100_000, help="vectors in the collection")
    parser.add_argument("--requests", type=int, default=100, help="requests per c=1 level (c=16 sends three times as many)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    configure_logging("WARNING")
    repos = {p: ensure_repo(args.data / f"repo-{p}", p) for p in ("fp32", "int8")}
    manifest = Manifest.read(repos["fp32"])
    parameters = {
        "size": args.size,
        "requests": args.requests,
        "concurrency": 16,
        "towers": ["fp32", "int8"],
        "hnsw": {"M": 16, "efConstruction": 200, "ef": 64},
    }
    report: dict[str, Any] = {**run_header(parameters=parameters), "size": args.size, "runs": {}}
    queries = sentences()
    shutil.rmtree(args.data / "milvus-tiers", ignore_errors=True)
    milvus, ports = start_milvus(args.data / "milvus-tiers")
    milvus_uri = local_uri(ports, args.data / "milvus-tiers")
    index = ImageIndex(milvus_uri, "tiers", ModelStamp.of(manifest), timeout_s=60, hnsw=HnswParams(16, 200, 64))
    try:
        log(f"filling {args.size} vectors")
        fill_collection(index, clustered_vectors(args.size, manifest.dimension))
        log(f"Milvus quiet after {wait_for_quiet(milvus.pid or 0, 300):.0f} s")
        for number, (precision, repo) in enumerate(repos.items()):
            triton, tports = start_triton(repo, args.data / f"triton-tiers-{precision}")
            gateway = Gateway(repo, f"127.0.0.1:{tports.grpc}", milvus_uri, "tiers", 64, args.data / f"gateway-tiers-{precision}.log")
            try:
                pids = {"triton": triton.pid or 0, "gateway": gateway.process.pid or 0, "milvus": milvus.pid or 0, "load client": os.getpid()}
                log(f"SearchText load, {precision} towers")
                if number == 0:  # a discarded pass: the first load after a bulk insert wakes Milvus's background work
                    measure_search(gateway, queries[::-1], args.requests, pids)
                wait_for_quiet(milvus.pid or 0, 120)
                measured = measure_search(gateway, queries, args.requests, pids)
                # measure_search's c=16 run is unique queries; a second pass with one repeated query measures the cache-hit path.
                cached = measure_search(gateway, ["a photo of a repeated query"] * len(queries), args.requests, pids)
                report["runs"][precision] = {
                    "unique": {"load": measured["c16_unique"], "cpu_ms_per_query": measured["c16_cpu_ms_per_query"]},
                    "cached": {"load": cached["c16_unique"], "cpu_ms_per_query": cached["c16_cpu_ms_per_query"]},
                }
            finally:
                gateway.stop()
                triton.stop()
    finally:
        index.close()
        milvus.stop(timeout_s=5)
    publish(report, args.out, "-tiers", START, END, render)


if __name__ == "__main__":
    main()
