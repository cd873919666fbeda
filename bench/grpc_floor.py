"""The floor under the gateway's CPU per query: a grpc.aio server answering SearchText from a fake engine, no Triton, no Milvus.

``bench.gateway_cpu`` runs it in the same run as the real gateway: the same ``SearchServicer``
and the same response (10 hits with metadata), once bare and once behind the gateway's
interceptors (``gateway.server.interceptors``, open mode), at concurrency 16 from a grpc.aio
client in another process. What the real gateway costs above it is its two downstream calls
(Triton over grpc.aio, Milvus over pymilvus's blocking client on a thread pool) and the engine.
``python -m bench.grpc_floor`` prints both figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.procs import cpu_seconds

CONCURRENCY = 16


async def serve(layers: bool, port_file: Path) -> None:
    """A SearchText server on a free loopback port (written to ``port_file``) whose engine answers at once."""
    import grpc

    from core.records import Hit, ImageMetadata
    from core.settings import GatewaySettings
    from gateway.server import interceptors
    from gateway.servicers import SearchServicer
    from search.cutoff import Cutoff
    from search.engine import SearchResult
    from text2image.v1 import text2image_pb2_grpc as pb_grpc

    metadata = ImageMetadata(640, 480, 81_234, "JPEG", 1_700_000_000_000_000, None)
    hits = [Hit(f"v{i}", f"file:///images/{i}.jpg", 0.3 - i / 100, ["cat", "red"], metadata) for i in range(10)]

    class Engine:
        async def search_text(self, *_args: Any, **_kwargs: Any) -> SearchResult:
            return SearchResult(hits, "images_1", 1.0, "clip", 12, False, Cutoff.NONE, None, 0, "t" * 80)

    settings = GatewaySettings(auth="open", listen="127.0.0.1:0")
    server = grpc.aio.server(interceptors=interceptors(settings) if layers else None)
    pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(Engine(), 10.0), server)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    port_file.write_text(str(port))
    await server.wait_for_termination()


async def load(port: int, requests: int) -> float:
    """Send ``requests`` SearchText from ``CONCURRENCY`` tasks over one channel; returns queries/s."""
    import grpc

    from text2image.v1 import text2image_pb2 as pb
    from text2image.v1 import text2image_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        numbers = iter(range(requests))

        async def worker() -> None:
            for i in numbers:
                await stub.SearchText(pb.SearchTextRequest(query=f"a photo of query {i}", top_k=10))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return requests / (time.perf_counter() - start)


def measure(layers: bool, requests: int, work: Path) -> dict[str, float]:
    """Server CPU ms per query (and queries/s) of one server at c=16, after a warm-up."""
    port_file = work / f"grpc-floor-{int(layers)}.port"
    port_file.unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([sys.executable, "-m", "bench.grpc_floor", "--serve", str(port_file), *(["--layers"] if layers else [])])
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text()):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the floor server did not start")
            time.sleep(0.1)
        port = int(port_file.read_text())
        asyncio.run(load(port, 200))
        before = cpu_seconds(server.pid, False)
        qps = asyncio.run(load(port, requests))
        return {"cpu_ms_per_query": (cpu_seconds(server.pid, False) - before) * 1000 / requests, "qps": qps}
    finally:
        server.terminate()
        server.wait(timeout=30)


def floor(requests: int, rounds: int, work: Path) -> dict[str, Any]:
    """``rounds`` alternating measurements of the bare server and the one behind the gateway's interceptors; their medians."""
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "interceptors": []}
    for _ in range(rounds):
        for name, layers in (("bare", False), ("interceptors", True)):
            runs[name].append(measure(layers, requests, work))
    return {
        "requests": requests,
        "rounds": runs,
        "median_cpu_ms_per_query": {name: statistics.median(r["cpu_ms_per_query"] for r in values) for name, values in runs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--layers", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.layers, args.serve))
        return
    result = floor(args.requests, args.rounds, Path(os.environ.get("TMPDIR", "/tmp")) / "t2i-grpc-floor")
    print(result["median_cpu_ms_per_query"])


if __name__ == "__main__":
    main()
