"""FindDuplicates' scan on 10,000 vectors against exact pairs from numpy, in one run (``python -m bench.duplicates``).

Writes ``bench/results/<date>-vm-duplicates.json`` and, with ``--docs``, the table of
``docs/benchmarks.md`` (``bench.docs_tables`` re-renders it from the committed file). The vectors
are clustered unit vectors of 512 dimensions (``bench.data``; members of one cluster sit at cosine
about 0.7) with near-duplicate pairs planted among them: a copy of a stored vector plus noise, at a
cosine drawn uniformly from 0.93 to 0.995. They go straight into a collection made by ``ImageIndex``
(no encoding), which is then sealed (HNSW over every row), and the scan is the engine's code path
(``search.duplicates.find_duplicates`` over ``ImageIndex``) with every Milvus call counted at the
port. The baseline is the exact answer: ``X @ X.T`` in blocks with numpy, on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import clustered_vectors
from bench.report import ROOT, measured, parameters_of, run_header
from core.index import ImageIndex
from core.records import ModelStamp, make_row
from devstack.milvus import local_uri, milvus_token, start_milvus
from search.duplicates import SCAN_BATCH, DuplicatesQuery, find_duplicates

START, END = "<!-- duplicates:start -->", "<!-- duplicates:end -->"


class Counted:
    """A ``MilvusPort`` that counts the calls (and the query iterator's pages) it passes to the real client."""

    def __init__(self, client: Any):
        self.client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        inner = getattr(self.client, name)
        if not callable(inner):
            return inner

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            result = inner(*args, **kwargs)
            if name == "query_iterator":
                return CountedPages(result, self.calls)
            return result

        return call


class CountedPages:
    def __init__(self, iterator: Any, calls: Counter[str]):
        self.iterator, self.calls = iterator, calls

    def next(self) -> list[dict[str, Any]]:
        self.calls["query_iterator.next"] += 1
        return list(self.iterator.next())

    def close(self) -> None:
        self.iterator.close()


def planted_vectors(count: int, pairs: int, dim: int, seed: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``count`` unit vectors, the last ``pairs`` of them near-copies of earlier ones; the planted (original, copy) index pairs."""
    rng = np.random.default_rng(seed + 100)
    base = clustered_vectors(count - pairs, dim, seed=seed)
    originals = rng.choice(len(base), pairs, replace=False)
    target = rng.uniform(0.93, 0.995, pairs)
    spread = np.sqrt(1 / target**2 - 1)  # |noise| giving cosine ~target with the original
    noise = rng.standard_normal((pairs, dim)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = base[originals] + spread[:, None].astype(np.float32) * noise
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    vectors = np.concatenate([base, copies.astype(np.float32)])
    return vectors, [(int(o), len(base) + n) for n, o in enumerate(originals)]


def exact_pairs(vectors: np.ndarray, threshold: float, block: int = 1024) -> set[tuple[int, int]]:
    """Every (i, j), i < j, with float32 cosine >= ``threshold``: ``X @ X.T`` in blocks of rows."""
    found: set[tuple[int, int]] = set()
    for start in range(0, len(vectors), block):
        scores = vectors[start : start + block] @ vectors.T
        rows, cols = np.nonzero(scores >= np.float32(threshold))
        found.update((start + int(r), int(c)) for r, c in zip(rows, cols, strict=True) if start + r < c)
    return found


def scan(index: ImageIndex, collection: str, threshold: float, neighbors: int) -> tuple[list[tuple[str, str]], float]:
    """The pairs of one full FindDuplicates stream (the engine's code path, calls run inline) and its seconds."""

    async def run(operation: str, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    async def active(deadline: float | None) -> str:
        return collection

    async def stream() -> list[tuple[str, str]]:
        query = DuplicatesQuery(min_score=threshold, max_neighbors=neighbors)
        return [(p.a, p.b) async for chunk in find_duplicates(query, index, run, active, None) for p in chunk.pairs]

    started = time.perf_counter()
    found = asyncio.run(stream())
    return found, time.perf_counter() - started


def measure(args: argparse.Namespace) -> dict[str, Any]:
    vectors, planted = planted_vectors(args.count, args.planted, args.dim, args.seed)
    ids = [f"img-{n:06d}" for n in range(len(vectors))]
    parameters = {
        "images": len(vectors),
        "dimension": args.dim,
        "planted_pairs": len(planted),
        "planted_cosines": "uniform 0.93..0.995",
        "clusters": 1000,
        "thresholds": args.thresholds,
        "max_neighbors": args.neighbors,
        "scan_batch": SCAN_BATCH,
        "seed": args.seed,
        "index": "HNSW (the project's defaults), sealed",
    }
    report: dict[str, Any] = {**run_header(parameters=parameters), "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-dups-") as tmp:
        work = Path(tmp)
        server, ports = start_milvus(work / "server")
        try:
            from pymilvus import MilvusClient

            uri = local_uri(ports, work / "server")
            counted = Counted(MilvusClient(uri=uri, token=milvus_token(work / "server"), timeout=60))
            index = ImageIndex(uri, "bench_dups", ModelStamp("bench/planted", "b" * 64, args.dim), timeout_s=60, client=counted)
            collection = index.new_collection()
            started = time.perf_counter()
            for start in range(0, len(vectors), 1000):
                rows = [make_row(ids[n], vectors[n], f"mem://{ids[n]}", [], f"h{n}", source="/bench") for n in range(start, min(start + 1000, len(vectors)))]
                index.upsert(collection, rows)
            sealed = index.seal(collection)
            report["load_s"] = round(time.perf_counter() - started, 2)
            report["sealed"] = sealed
            for threshold in args.thresholds:
                numpy_started = time.perf_counter()
                truth = exact_pairs(vectors, threshold)
                numpy_s = time.perf_counter() - numpy_started
                counted.calls.clear()
                found, seconds = scan(index, collection, threshold, args.neighbors)
                calls = dict(counted.calls)
                got = {(int(a[4:]), int(b[4:])) for a, b in found}
                planted_expected = {pair for pair in planted if pair in truth}
                report["runs"].append(
                    {
                        "threshold": threshold,
                        "exact_pairs": len(truth),
                        "found_pairs": len(found),
                        "reported_twice": len(found) - len(got),
                        "recall": round(len(got & truth) / len(truth), 4) if truth else 1.0,
                        "not_in_exact": len(got - truth),
                        "planted_at_or_above": len(planted_expected),
                        "planted_found": len(planted_expected & got),
                        "scan_s": round(seconds, 3),
                        "milvus_calls": calls,
                        "milvus_calls_total": sum(calls.values()),
                        "numpy_exact_s": round(numpy_s, 3),
                        "scan_over_numpy": round(seconds / numpy_s, 2),
                    }
                )
                print(json.dumps(report["runs"][-1]), flush=True)
            index.close()
        finally:
            server.stop(timeout_s=10)
    return report


def render(report: dict[str, Any]) -> str:
    """The docs table of a result file."""
    p = parameters_of(report)
    lines = [
        f"{measured(report)} (`{report.get('path', '')}`); {p['images']:,} unit vectors of {p['dimension']} dimensions in {p['clusters']:,} clusters, "
        f"{p['planted_pairs']} planted near-duplicate pairs (cosine {p['planted_cosines']}), {p['index']}, loaded and sealed in {report['load_s']} s; "
        f"one FindDuplicates scan (the engine's code path, max_neighbors {p['max_neighbors']}, {p['scan_batch']} vectors a range search) "
        "against the exact pairs from numpy (`X @ X.T` in blocks of 1,024 rows) in the same run:",
        "",
        "| min_score | exact pairs | found | recall | planted found | scan s (per 10k images) | Milvus calls | numpy exact s | scan / numpy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in report["runs"]:
        per_10k = run["scan_s"] * 10_000 / p["images"]
        calls = run["milvus_calls"]
        detail = f"{run['milvus_calls_total']} ({calls.get('search', 0)} range searches, {calls.get('query_iterator.next', 0)} pages)"
        lines.append(
            f"| {run['threshold']} | {run['exact_pairs']:,} | {run['found_pairs']:,} | {run['recall']:.3f} | "
            f"{run['planted_found']} of {run['planted_at_or_above']} | {per_10k:.2f} | {detail} | {run['numpy_exact_s']:.2f} | {run['scan_over_numpy']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="vectors in the collection, planted copies included")
    parser.add_argument("--planted", type=int, default=200, help="near-duplicate pairs planted")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.95, 0.9])
    parser.add_argument("--neighbors", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="result file (default bench/results/<date>-vm-duplicates.json)")
    parser.add_argument("--docs", action="store_true", help="rewrite the table in docs/benchmarks.md from this run")
    args = parser.parse_args(argv)
    report = measure(args)
    out = args.out or ROOT / "bench" / "results" / f"{report['date']}-vm-duplicates.json"
    report["path"] = str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    if args.docs:
        from bench.report import replace_between

        replace_between(ROOT / "docs" / "benchmarks.md", START, END, render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
