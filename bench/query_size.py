"""What one SearchText costs the gateway in CPU by query size: 1 KB, 100 KB and 4 MB of text.

Starts the local stack with the random ViT-B/32 (int8) repository, sends ``--requests`` queries of
each size one at a time (distinct texts, so the embedding cache never answers), and reads the
gateway's CPU time from /proc. Before the bounds (issue: unbounded work per request), a 3.9 MB
query took 3.4 s of CPU. Writes bench/results/<date>-<host>-query-size.json and the table between
the markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import grpc

from bench.procs import cpu_seconds
from bench.report import measured, publish, run_header
from bench.run import ROOT, ensure_repo, log
from core.index import ImageIndex
from core.manifest import Manifest
from core.records import ModelStamp
from devstack.stack import LocalStack
from t2i.client import GatewayClient

START, END = "<!-- query-size:start -->", "<!-- query-size:end -->"
SIZES = {"1 KB": 1_000, "100 KB": 100_000, "4 MB": 4_000_000}


def render(report: dict[str, Any]) -> str:
    """The Markdown table."""
    lines = [
        f"{measured(report)}, {report['requests']} requests per size ({report['path']}):",
        "",
        "| query | answer | gateway CPU per request | wall time per request (client) |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in report["sizes"].items():
        lines.append(f"| {name} | {row['answer']} | {row['cpu_ms']:.2f} ms | {row['wall_ms']:.1f} ms |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    repo = ensure_repo(args.data / "repo-int8", "int8")
    report: dict[str, Any] = {**run_header(parameters={"requests": args.requests, "sizes": SIZES, "precision": "int8"}), "requests": args.requests, "sizes": {}}
    stack = LocalStack(repo, args.data / "query-size", gateway_address="127.0.0.1:0", alias="query_size")
    with stack:
        writer = ImageIndex(stack.milvus_uri, stack.alias, ModelStamp.of(Manifest.read(repo)), timeout_s=60, token=stack.milvus_token)
        writer.ensure_active()  # an empty collection: searches encode and search (with nothing indexed they stop before encoding)
        writer.close()
        client = GatewayClient(stack.gateway_address, timeout_s=60, token=stack.token("write"))
        pid = stack.gateway.pid if stack.gateway else 0
        for name, size in SIZES.items():
            answers: dict[str, int] = {}
            before, start = cpu_seconds(pid or 0), time.perf_counter()
            for i in range(args.requests):
                text = (f"query {i} " + "a dog running on the beach " * (size // 27 + 1))[:size]
                try:
                    response = client.search_text(text, top_k=3)
                    answer = f"OK, truncated={response.query_truncated}"
                except grpc.RpcError as exc:
                    answer = exc.code().name
                answers[answer] = answers.get(answer, 0) + 1
            cpu = (cpu_seconds(pid or 0) - before) * 1000 / args.requests
            wall = (time.perf_counter() - start) * 1000 / args.requests
            report["sizes"][name] = {"answer": ", ".join(f"{k} ×{v}" for k, v in answers.items()), "cpu_ms": cpu, "wall_ms": wall}
            log(f"{name}: {report['sizes'][name]}")
        client.close()
    publish(report, args.out, "-query-size", START, END, render)


if __name__ == "__main__":
    main()
