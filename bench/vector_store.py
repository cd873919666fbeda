"""Milvus server (the local default) against Milvus Lite, on the same vectors, in one run.

Writes ``bench/results/vector-store-<date>-<host>.json``. Measures insert throughput, single-query
search latency, recall@10 against exact search, and which of the features this project relies on
(ARRAY labels, HNSW, aliases) each one supports, on clustered unit vectors (``bench.data``) with
queries near stored ones. ``render`` makes the table of ``docs/vector-store.md`` from the JSON
(``bench.docs_tables``). Needs ``requirements-bench.txt`` (``make bench-store``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

from bench.data import clustered_vectors, exact_top_k, query_vectors
from bench.report import measured, parameters_of, run_header
from devstack.milvus import local_uri, start_milvus


def schema(client: MilvusClient, dim: int, labels: bool) -> Any:
    s = client.create_schema(auto_id=False)
    s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    if labels:
        s.add_field("labels", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=4, max_length=16)
    return s


def try_feature(fn: Any) -> str:
    try:
        fn()
        return "yes"
    except Exception as exc:  # noqa: BLE001 - the answer is the error
        return f"no: {str(exc)[:160]}"


def measure(name: str, client: MilvusClient, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Features, insert throughput, flush/index time, search latency and recall of one store."""
    dim = vectors.shape[1]
    result: dict[str, Any] = {"store": name}
    result["array_labels"] = try_feature(lambda: client.create_collection("probe_array", schema=schema(client, dim, True)))
    hnsw = client.prepare_index_params()
    hnsw.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 200})
    result["hnsw"] = try_feature(lambda: client.create_collection("probe_hnsw", schema=schema(client, dim, False), index_params=hnsw))
    index = hnsw if result["hnsw"] == "yes" else client.prepare_index_params()
    if result["hnsw"] != "yes":
        index.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection("bench", schema=schema(client, dim, False), index_params=index)
    result["alias"] = try_feature(lambda: client.create_alias("bench", "bench_alias"))
    start = time.perf_counter()
    for offset in range(0, len(vectors), 1000):
        rows = [{"id": str(i), "vector": vectors[i].tolist()} for i in range(offset, min(offset + 1000, len(vectors)))]
        client.insert("bench", rows)
    result["insert_rows_per_s"] = len(vectors) / (time.perf_counter() - start)
    start = time.perf_counter()
    client.flush("bench")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # wait for the index to cover every sealed row
        described = client.describe_index("bench", client.list_indexes("bench")[0])
        if int(described.get("pending_index_rows", 0)) == 0 and int(described.get("indexed_rows", len(vectors))) >= len(vectors):
            break
        time.sleep(1)
    if hasattr(client, "release_collection"):
        client.release_collection("bench")  # reload so sealed HNSW segments serve, not the interim index
        client.load_collection("bench")
    result["flush_and_index_s"] = time.perf_counter() - start
    params = {"metric_type": "COSINE", "params": {"ef": 64}} if result["hnsw"] == "yes" else {"metric_type": "COSINE"}
    client.search("bench", data=[queries[0].tolist()], limit=10, search_params=params, consistency_level="Strong")  # all rows visible
    latencies, found = [], []
    for query in queries:
        t = time.perf_counter()
        hits = client.search("bench", data=[query.tolist()], limit=10, search_params=params, consistency_level="Bounded")[0]
        latencies.append((time.perf_counter() - t) * 1000)
        found.append({int(h["id"]) for h in hits})
    result["search_p50_ms"] = statistics.median(latencies)
    result["search_p95_ms"] = float(np.percentile(latencies, 95))
    result["recall_at_10"] = float(np.mean([len(f & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))
    return result


def render(report: dict[str, Any]) -> str:
    """The comparison table of docs/vector-store.md."""
    server, lite = report["results"]
    params = parameters_of(report)
    versions = report.get("versions", {})
    lines = [
        f"{measured(report)}: {report['size']:,} {params.get('vectors', 'unit vectors')} of dimension {report['dim']}, queries near stored vectors "
        f"({report['queries']} on the server, {lite.get('queries', report['queries'])} on Lite), top 10, COSINE, HNSW (M=16, efConstruction=200, ef=64)"
        + (f"; {', '.join(f'{name} {version}' for name, version in versions.items())}" if versions else "")
        + f". Raw data: `{report['path']}`.",
        "",
        f"| measure | {server['store']} | {lite['store']} | server / Lite |",
        "| --- | --- | --- | --- |",
        f"| start-up | {server['startup_s']:.1f} s | {lite['startup_s']:.1f} s | |",
        f"| insert (batches of 1,000) | {server['insert_rows_per_s']:,.0f} rows/s | {lite['insert_rows_per_s']:,.0f} rows/s | "
        f"{report['ratios_server_over_lite']['insert_rows_per_s']:.1f}× |",
        f"| flush and index build | {server['flush_and_index_s']:.1f} s | {lite['flush_and_index_s']:.1f} s | |",
        f"| search p50 (one query at a time) | {server['search_p50_ms']:.1f} ms | {lite['search_p50_ms']:.0f} ms | "
        f"{report['ratios_server_over_lite']['search_p50_speedup']:.0f}× faster |",
        f"| search p95 | {server['search_p95_ms']:.1f} ms | {lite['search_p95_ms']:.0f} ms | |",
        f"| recall@10 against exact search | {server['recall_at_10']:.3f} | {lite['recall_at_10']:.3f} | |",
        f"| ARRAY labels, HNSW, aliases | {_features(server)} | {_features(lite)} | |",
    ]
    return "\n".join(lines)


def _features(result: dict[str, Any]) -> str:
    return ", ".join(result[name][:60] for name in ("array_labels", "hnsw", "alias"))


def versions() -> dict[str, str]:
    """The client and Lite packages' versions (the server's is in its store name)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("pymilvus", "milvus-lite"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--lite-queries", type=int, default=None, help="queries for Lite (default: the same as the server's; Lite takes about 0.1 s each at 20k)"
    )
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    vectors = clustered_vectors(args.size, args.dim)
    queries = query_vectors(vectors, args.queries)
    truth = exact_top_k(vectors, queries, 10)
    work = Path(tempfile.mkdtemp(prefix="t2i-bench-store-"))
    results = []
    try:
        t = time.perf_counter()
        server, ports = start_milvus(work / "server")
        startup = time.perf_counter() - t
        try:
            client = MilvusClient(uri=local_uri(ports, work / "server"))
            results.append({**measure("milvus-server 2.3.5", client, vectors, queries, truth), "startup_s": startup})
            client.close()
        finally:
            server.stop(timeout_s=5)
        t = time.perf_counter()
        lite = MilvusClient(str(work / "lite.db"))
        startup = time.perf_counter() - t
        few = min(args.queries, args.lite_queries or args.queries)
        results.append({**measure("milvus-lite", lite, vectors, queries[:few], truth[:few]), "startup_s": startup, "queries": few})
        lite.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    server_result, lite_result = results
    report = {
        **run_header(
            parameters={
                "size": args.size,
                "queries": args.queries,
                "dim": args.dim,
                "lite_queries": lite_result.get("queries"),
                "vectors": "clustered unit vectors (bench.data.clustered_vectors)",
                "hnsw": {"M": 16, "efConstruction": 200, "ef": 64},
            }
        ),
        "versions": versions(),
        "size": args.size,
        "dim": args.dim,
        "queries": args.queries,
        "results": results,
        "ratios_server_over_lite": {
            "insert_rows_per_s": server_result["insert_rows_per_s"] / lite_result["insert_rows_per_s"],
            "search_p50_speedup": lite_result["search_p50_ms"] / server_result["search_p50_ms"],
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"vector-store-{report['date']}-{report['host']}.json"
    report["path"] = f"bench/results/{path.name}"
    path.write_text(json.dumps(report, indent=2))
    print(render(report))
    print(f"wrote {path}; point bench/docs_tables.py's vector-store table at it and run python -m bench.docs_tables")


if __name__ == "__main__":
    main()
