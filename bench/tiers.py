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
from bench.report import measured, publish, run_header
from bench.run import ROOT, Gateway, ensure_repo, fill_collection, log, sentences
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
    report: dict[str, Any] = {**run_header(), "size": args.size, "runs": {}}
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
