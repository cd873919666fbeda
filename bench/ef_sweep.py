"""``make bench-ef``: the HNSW search parameter ``ef`` against recall and SearchText latency, by index size.

For each size: a fresh collection of clustered vectors (M=16, efConstruction=200, as shipped) is
filled and sealed, recall@10 against exact search is measured for each ``ef``, then the real stack
(int8 Triton, the gateway with ``T2I_HNSW_EF``) serves the same SearchText load per ``ef``: c=1
unique, c=1 repeated (cache hit) and c=16. The ``ef`` values run in rounds (every value, then every
value again) so drift shows, after one discarded pass. Writes ``bench/results/<date>-<host>-ef.json``
and the table between the ``ef`` markers of ``docs/benchmarks.md``. A 1M build takes about 30-40
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from bench.data import clustered_vectors, query_vectors
from bench.levers import measure_search
from bench.procs import wait_for_quiet
from bench.queries import sentences
from bench.report import measured, publish, run_header
from bench.run import ROOT, Gateway, ensure_repo, fill_collection, log, measure_recall
from core.index import ImageIndex
from core.logs import configure_logging
from core.manifest import Manifest
from core.records import HnswParams, ModelStamp
from devstack.milvus import local_uri, start_milvus
from devstack.triton import start_triton

START, END = "<!-- ef:start -->", "<!-- ef:end -->"
ALIAS = "ef_sweep"


def sweep_size(size: int, efs: list[int], rounds: int, requests: int, repo: Path, data: Path, stamp: ModelStamp, dimension: int) -> dict[str, Any]:
    """Recall and SearchText load for each ``ef`` on one freshly built index of ``size`` vectors."""
    shutil.rmtree(data / "milvus-ef", ignore_errors=True)
    milvus, ports = start_milvus(data / "milvus-ef")
    uri = local_uri(ports, data / "milvus-ef")
    index = ImageIndex(uri, ALIAS, stamp, timeout_s=60, hnsw=HnswParams(16, 200, efs[0]))
    result: dict[str, Any] = {"recall_at_10": {}, "runs": {str(ef): [] for ef in efs}}
    try:
        log(f"{size:,} vectors: filling and sealing")
        base = clustered_vectors(size, dimension)
        collection = fill_collection(index, base)
        result["quiet_after_s"] = wait_for_quiet(milvus.pid or 0, 900)
        result["recall_at_10"] = measure_recall(index, collection, base, query_vectors(base, 200), tuple(efs))
        log(f"recall@10 by ef: {result['recall_at_10']}")
        triton, tports = start_triton(repo, data / "triton-ef")
        queries = sentences()
        try:
            order = [efs[0]] + [ef for _ in range(rounds) for ef in efs]  # the first pass is discarded
            for number, ef in enumerate(order):
                wait_for_quiet(milvus.pid or 0, 120)
                gateway = Gateway(repo, f"127.0.0.1:{tports.grpc}", uri, ALIAS, ef, data / "gateway-ef.log")
                try:
                    pids = {"triton": triton.pid or 0, "gateway": gateway.process.pid or 0, "milvus": milvus.pid or 0}
                    measured = measure_search(gateway, queries, requests, pids)
                finally:
                    gateway.stop()
                if number:
                    result["runs"][str(ef)].append(
                        {
                            "c1_unique_p50_ms": measured["c1_unique"]["p50_ms"],
                            "c1_unique_p95_ms": measured["c1_unique"]["p95_ms"],
                            "c1_cached_p50_ms": measured["c1_cached"]["p50_ms"],
                            "c16_qps": measured["c16_unique"]["qps"],
                            "c16_p99_ms": measured["c16_unique"]["p99_ms"],
                            "milvus_cpu_ms_per_query": measured["c16_cpu_ms_per_query"]["milvus"],
                        }
                    )
                    log(f"{size:,} ef={ef}: {result['runs'][str(ef)][-1]}")
        finally:
            triton.stop()
    finally:
        index.close()
        milvus.stop(timeout_s=5)
    return result


def _span(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return format(low, fmt) if f"{low:{fmt}}" == f"{high:{fmt}}" else f"{low:{fmt}}–{high:{fmt}}"


def render(report: dict[str, Any]) -> str:
    lines = [
        f"{measured(report)}, int8 text tower, "
        f"HNSW M=16, efConstruction=200, {report['rounds']} rounds per ef after a discarded pass, {report['requests']} requests per level. "
        f"Raw data: `{report['path']}`.",
        "",
        "| vectors | ef | recall@10 | c=1 unique p50 | c=1 cache hit p50 | c=16 queries/s | Milvus CPU per query (c=16) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, result in report["sizes"].items():
        for ef, runs in result["runs"].items():
            lines.append(
                f"| {int(size):,} | {ef} | {result['recall_at_10'][ef]:.3f} | {_span([r['c1_unique_p50_ms'] for r in runs], '.1f')} ms | "
                f"{_span([r['c1_cached_p50_ms'] for r in runs], '.1f')} ms | {_span([r['c16_qps'] for r in runs], '.0f')} | "
                f"{_span([r['milvus_cpu_ms_per_query'] for r in runs], '.1f')} ms |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated index sizes")
    parser.add_argument("--efs", default="64,32,48", help="comma-separated ef values; the first is the shipped one")
    parser.add_argument("--rounds", type=int, default=2, help="times each ef is measured")
    parser.add_argument("--requests", type=int, default=150, help="requests per load level (c=16 sends three times as many)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    configure_logging("WARNING")
    repo = ensure_repo(args.data / "repo-int8", "int8")
    manifest = Manifest.read(repo)
    stamp = ModelStamp.of(manifest)
    efs = [int(ef) for ef in args.efs.split(",")]
    parameters = {
        "sizes": [int(s) for s in args.sizes.split(",")],
        "efs": efs,
        "rounds": args.rounds,
        "requests": args.requests,
        "levels": "c=1 unique, c=1 repeated, c=16 unique (3 × requests)",
        "hnsw": {"M": 16, "efConstruction": 200},
        "recall_queries": 200,
        "precision": "int8",
    }
    report: dict[str, Any] = {**run_header(parameters=parameters), "efs": efs, "rounds": args.rounds, "requests": args.requests, "sizes": {}}
    for size in (int(s) for s in args.sizes.split(",")):
        report["sizes"][str(size)] = sweep_size(size, efs, args.rounds, args.requests, repo, args.data, stamp, manifest.dimension)
    path = publish(report, args.out, "-ef", START, END, render)
    log(f"wrote {path}; updated docs/benchmarks.md")


if __name__ == "__main__":
    main()
