"""``make bench``: the product against the hand-written baseline, on the same machine, in one run.

Runs the real stack (gateway, Triton, Milvus on loopback) with the full ViT-B/32 architecture and
random weights (real speed, meaningless rankings), and the baseline (FastAPI + in-process PyTorch
CLIP + one Milvus query per request; a one-image-at-a-time indexer) against the same Milvus
collection. Writes ``bench/results/<date>-<host>.json``, PNG plots beside it, and the table in
``docs/benchmarks.md``. ``--quick`` sizes it to a few minutes. Nothing here is a test assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.cpu import cpu_ms_per_query, cpu_snapshot
from bench.data import clustered_vectors, exact_top_k, photo_like_jpegs, query_vectors
from bench.load import HttpJsonClient, run_load
from bench.procs import rss_mb, wait_for_quiet
from bench.queries import check_distinct, distinct_queries, sentences
from bench.reindex_cases import only_reindex, reindex_cases
from bench.report import END, ROOT, START, add_ratios, markdown, publish, run_header, write_plots
from core.auth import LocalTokens
from core.index import ImageIndex
from core.listen import PORT_FILE_ENV
from core.logs import configure_logging
from core.manifest import Manifest
from core.records import HnswParams, ModelStamp, make_row
from devstack.milvus import local_uri, start_milvus
from devstack.process import ManagedProcess, free_port
from devstack.stack import gateway_serving
from devstack.triton import start_triton
from export.main import refresh_layout, run_export
from inference.triton_client import RetryPolicy, TritonEncoder
from reindex.job import Reindexer
from reindex.sources import Source
from t2i.client import GatewayClient


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def ensure_repo(path: Path, precision: str) -> Path:
    try:
        manifest = Manifest.read(path)
        if manifest.precision == precision:
            refresh_layout(path, manifest)  # configs and model.py from this checkout
            return path
    except FileNotFoundError:
        pass
    log(f"exporting random ViT-B/32 ({precision}) to {path}")
    run_export("random", path, precision)
    return path


def fill_collection(index: ImageIndex, vectors: np.ndarray) -> str:
    """A new collection holding ``vectors`` (ids v0..), indexed, loaded, behind the alias."""
    collection = index.new_collection()
    for start in range(0, len(vectors), 5000):
        index.upsert(collection, [make_row(f"v{i}", vectors[i], f"synthetic://{i}", [], "") for i in range(start, min(start + 5000, len(vectors)))])
    index.seal(collection, wait_s=3600)
    client: Any = index._connect()  # the real pymilvus client: release_collection is outside the port ImageIndex uses
    client.release_collection(collection, timeout=600)  # not the growing segments' interim index
    client.load_collection(collection, timeout=600)
    previous = index.swap_alias(collection)
    if previous:
        index.drop(previous)
    return collection


def measure_recall(index: ImageIndex, collection: str, base: np.ndarray, queries: np.ndarray, efs: tuple[int, ...]) -> dict[str, float]:
    truth = exact_top_k(base, queries, 10)
    result = {}
    for ef in efs:
        index.hnsw = HnswParams(index.hnsw.m, index.hnsw.ef_construction, ef)
        found = [{int(h.id[1:]) for h in index.search(collection, q, 10)} for q in queries]
        result[str(ef)] = float(np.mean([len(f & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))
    return result


class Gateway:
    """A gateway process for the benchmark."""

    def __init__(self, repo: Path, triton_url: str, milvus_uri: str, alias: str, ef: int, log_path: Path, extra_env: dict[str, str] | None = None):
        port_file = log_path.with_suffix(".address")
        port_file.unlink(missing_ok=True)
        # Tokens on, as shipped: the clients of the benchmark present the write token.
        tokens = LocalTokens(log_path.parent / "auth").ensure()
        self.token = tokens.token("write")
        env = {
            **os.environ,
            **(extra_env or {}),
            "T2I_LISTEN": "127.0.0.1:0",  # any free port: the gateway reports the one it bound (core.listen)
            PORT_FILE_ENV: str(port_file),
            "T2I_TRITON_URL": triton_url,
            "T2I_MILVUS_URI": milvus_uri,
            "T2I_AUTH_TOKENS_FILE": str(tokens.server_file),
            "T2I_MODEL_REPOSITORY": str(repo),
            "T2I_COLLECTION_ALIAS": alias,
            "T2I_METRICS_PORT": "0",
            "T2I_HNSW_EF": str(ef),
        }
        self.process = ManagedProcess("gateway", [sys.executable, "-m", "gateway.server", "--log-level", "WARNING"], log_path, env=env).start()
        self.address = self.process.wait_reported(port_file, 120)
        self.process.wait_until(lambda: gateway_serving(self.address), 120, "SERVING")

    def stop(self) -> None:
        self.process.stop()


@contextlib.contextmanager
def served_vectors(data: Path, name: str, alias: str, size: int, env: dict[str, str], timeout_s: float) -> Iterator[GatewayClient]:
    """``size`` clustered vectors sealed in a fresh Milvus under ``data``, behind a Triton of the int8 repo and a gateway (``env``).

    Yields a client of that gateway; stops the gateway, Triton and Milvus after (``bench.pages``,
    ``bench.search_terms``). ``name`` names the folders and the gateway's log.
    """
    repo = ensure_repo(data / "repo-int8", "int8")
    manifest = Manifest.read(repo)
    shutil.rmtree(data / f"milvus-{name}", ignore_errors=True)
    milvus, ports = start_milvus(data / f"milvus-{name}")
    uri = local_uri(ports, data / f"milvus-{name}")
    index = ImageIndex(uri, alias, ModelStamp.of(manifest), timeout_s=60)
    try:
        log(f"{size:,} vectors: filling and sealing")
        fill_collection(index, clustered_vectors(size, manifest.dimension))
        wait_for_quiet(milvus.pid or 0, 300)
        triton, tports = start_triton(repo, data / f"triton-{name}")
        try:
            gateway = Gateway(repo, f"127.0.0.1:{tports.grpc}", uri, alias, 64, data / f"gateway-{name}.log", env)
            client = GatewayClient(gateway.address, timeout_s=timeout_s, token=gateway.token)
            try:
                yield client
            finally:
                client.close()
                gateway.stop()
        finally:
            triton.stop()
    finally:
        index.close()
        milvus.stop()


def requests_at(per_level: int, concurrency: int) -> int:
    """Requests sent at one load level: ``per_level``, more at higher concurrency (each level lasts long enough to mean something)."""
    return per_level * max(1, concurrency // 4 + 1)


def unique_sweep(
    send: Callable[[str], Any], queries: list[str], levels: tuple[int, ...], per_level: int, seconds: float, pids: dict[str, int] | None = None
) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Each level sends the next ``requests_at`` queries of ``queries``; returns the levels' figures and the queries each one sent.

    With ``pids`` (name -> server pid), each level also records the CPU ms per query of each (``bench.cpu``).
    """
    sweep, sent, offset = [], [], 0
    for c in levels:
        count = requests_at(per_level, c)
        chunk = queries[offset : offset + count]
        if len(chunk) < count:
            raise ValueError(f"{len(queries)} queries are too few for levels {levels} at {per_level} requests a level")
        level: list[str] = []

        def call(i: int, chunk: list[str] = chunk, level: list[str] = level) -> None:
            level.append(chunk[i])  # recorded before it is sent: a failed request still reached the gateway
            send(chunk[i])

        before = cpu_snapshot(pids or {})
        figures: dict[str, Any] = run_load(call, c, count, seconds).as_dict()
        if pids:
            figures["cpu_ms_per_query"] = cpu_ms_per_query(before, pids, int(figures["requests"]))
        sweep.append(figures)
        sent.append(level)
        offset += count
    return sweep, sent


def measure_ours(
    gateway: Gateway, queries: list[str], levels: tuple[int, ...], per_level: int, seconds: float, pids: dict[str, int] | None = None
) -> tuple[dict[str, Any], list[list[str]]]:
    """Unique levels, then one repeated query (the cache-hit path); also returns the queries each level sent (``pids``: see ``unique_sweep``)."""
    client = GatewayClient(gateway.address, timeout_s=60, token=gateway.token)
    for i in range(5):  # warm-up, different queries
        client.search_text(f"warm up query number {i}", top_k=10)
    sweep, sent = unique_sweep(lambda text: client.search_text(text, top_k=10), queries, levels, per_level, seconds, pids)
    distinct = check_distinct(sent, "ours' levels")
    client.search_text("a photo of a repeated query", top_k=10)
    cached = run_load(lambda i: client.search_text("a photo of a repeated query", top_k=10), 1, per_level, seconds).as_dict()
    rss = rss_mb(gateway.process.pid or 0)
    client.close()
    return {"unique": sweep, "distinct_queries": distinct, "cached_c1": cached, "gateway_rss_mb": rss}, sent


def soak(gateway: Gateway, queries: list[str], seconds: float, sent: list[str], concurrency: int = 4, step_s: float = 10.0) -> dict[str, Any]:
    """Steady load below saturation for ``seconds``, sampling the gateway's RSS every ``step_s``.

    Every query is new (a numbered variant of a sentence; each is appended to ``sent``), so the
    embedding cache fills to its bound and then evicts: growth in the second half would be a leak,
    not the cache filling.
    """
    client = GatewayClient(gateway.address, timeout_s=60, token=gateway.token)
    pid = gateway.process.pid or 0
    samples, served = [rss_mb(pid)], 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        base = served

        def call(i: int, base: int = base) -> None:
            text = f"{queries[(base + i) % len(queries)]} number {base + i}"
            sent.append(text)
            client.search_text(text, top_k=10)

        level = run_load(call, concurrency, 10**7, min(step_s, seconds))
        served += level.requests
        samples.append(rss_mb(pid))
    client.close()
    elapsed = time.perf_counter() - start
    half = len(samples) // 2
    return {
        "seconds": elapsed,
        "concurrency": concurrency,
        "qps": served / elapsed,
        "queries": served,
        "rss_mb": samples,
        "rss_growth_mb": samples[-1] - samples[0],
        "rss_growth_second_half_mb": samples[-1] - samples[half],
    }


def measure_baseline(
    port: int, queries: list[str], levels: tuple[int, ...], per_level: int, seconds: float, pids: dict[str, int] | None = None
) -> dict[str, Any]:
    """The same unique levels against the baseline (it has no cache, but it gets the very queries ours got; ``pids``: see ``unique_sweep``)."""
    client = HttpJsonClient("127.0.0.1", port)
    for i in range(5):
        client.post("/search", {"query": f"warm up query number {i}", "top_k": 10})
    sweep, sent = unique_sweep(lambda text: client.post("/search", {"query": text, "top_k": 10}), queries, levels, per_level, seconds, pids)
    return {"unique": sweep, "distinct_queries": check_distinct(sent, "the baseline's levels")}


def start_baseline(repo: Path, milvus_uri: str, alias: str, log_path: Path) -> tuple[ManagedProcess, int]:
    port = free_port()
    env = {
        **os.environ,
        "BASELINE_SERVE": "1",
        "BASELINE_MODEL": "random",
        "BASELINE_MILVUS_URI": milvus_uri,
        "BASELINE_COLLECTION": alias,
        "BASELINE_TOKENIZER": str(repo / "clip_text" / "1" / "tokenizer.json"),
    }
    process = ManagedProcess(
        "baseline",
        [sys.executable, "-m", "uvicorn", "bench.baseline:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        log_path,
        env=env,
        cwd=ROOT,
    ).start()
    client = HttpJsonClient("127.0.0.1", port)
    process.wait_until(lambda: bool(client.post("/search", {"query": "ready?", "top_k": 1})), 300, "answering")
    return process, port


async def encoder_throughput(url: str, repo: Path, batches: tuple[int, ...], concurrency: tuple[int, ...], seconds: float) -> dict[str, Any]:
    encoder = TritonEncoder(url, repo, RetryPolicy(timeout_s=300))
    texts = sentences()
    tokens = {b: encoder.tokenizer.encode(texts[:b]) for b in batches}
    rng = np.random.default_rng(0)
    pixels = {b: rng.standard_normal((b, 3, 224, 224)).astype(np.float32) for b in batches}
    result: dict[str, Any] = {"text": [], "image": []}
    for kind in ("text", "image"):
        for b in batches:
            for c in concurrency:

                async def one() -> None:
                    if kind == "text":
                        await encoder.encode_tokens(tokens[b])
                    else:
                        await encoder.encode_pixels(pixels[b])

                await one()
                done, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds:
                    await asyncio.gather(*(one() for _ in range(c)))
                    done += b * c
                result[kind].append({"batch": b, "concurrency": c, "per_s": done / (time.perf_counter() - start)})
    await encoder.close()
    return result


async def reindex_ours(repo: Path, triton_url: str, milvus_uri: str, folder: Path, stamp: ModelStamp) -> tuple[float, float]:
    """(whole job, pipeline alone) img/s of a full reindex of ``folder``."""
    encoder = TritonEncoder(triton_url, repo, RetryPolicy(timeout_s=300))
    index = ImageIndex(milvus_uri, "bench_reindex", stamp, timeout_s=30)
    try:
        report = await Reindexer(encoder, index, batch_size=32, workers=2).run(Source(str(folder)), full=True, progress=False)
    finally:
        await encoder.close()
        index.close()
    return report.images_per_second, report.pipeline_images_per_second


def reindex_baseline(files: list[Path], milvus_uri: str, stamp: ModelStamp) -> float:
    from bench.baseline import baseline_model, index_one_at_a_time

    index = ImageIndex(milvus_uri, "bench_reindex_baseline", stamp, timeout_s=30)
    collection = index.ensure_active()
    rate = index_one_at_a_time(baseline_model("random"), files, lambda rows: index.upsert(collection, rows))
    index.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few minutes: 10k and 100k vectors, short load levels, 300 images")
    parser.add_argument("--sizes", default=None, help="comma-separated index sizes (default 10000,100000,1000000; quick 10000,100000)")
    parser.add_argument("--soak-seconds", type=float, default=None, help="length of the memory soak (default 600; quick 30)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench", help="work folder (exports and JPEGs are cached here)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--only",
        choices=["reindex"],
        default=None,
        help="reindex: only the indexing cases (bench.reindex_cases), into <out>/<date>-<host>-reindex.json; docs untouched",
    )
    args = parser.parse_args()
    configure_logging("WARNING")  # quiet pymilvus's tracebacks for expected misses (no alias yet)
    quick = args.quick
    sizes = [int(s) for s in (args.sizes or ("10000,100000" if quick else "10000,100000,1000000")).split(",")]
    levels = (1, 4, 16, 64)
    per_level, seconds = (40, 20.0) if quick else (200, 90.0)
    images = 300 if quick else 2000
    soak_s = args.soak_seconds or (30.0 if quick else 600.0)
    settle_s = 600.0 if quick else 1800.0  # the most to wait for Milvus to go quiet after a bulk load
    baseline_images = 60 if quick else 300
    encoder_seconds = 4.0 if quick else 15.0
    queries = distinct_queries(sum(requests_at(per_level, c) for c in levels))
    parameters = {
        "mode": "quick" if quick else "full",
        "overrides": {name: value for name, value in (("sizes", args.sizes), ("soak_seconds", args.soak_seconds)) if value is not None},
        "sizes": sizes,
        "levels": list(levels),
        "requests_per_level": {str(c): requests_at(per_level, c) for c in levels},
        "level_seconds_cap": seconds,
        "queries": f"{len(queries)} distinct sentences (bench.queries.distinct_queries), the same list for every stack and size; "
        "none is sent twice to one server process (checked)",
        "cached_requests": per_level,
        "soak_seconds": soak_s,
        "soak_concurrency": 4,
        "settle_max_s": settle_s,
        "recall_queries": 200,
        "recall_efs": [32, 64, 128, 256],
        "hnsw": {"M": 16, "efConstruction": 200, "ef": 64},
        "encoder_seconds": encoder_seconds,
        "encoder_batches": [1, 8, 32],
        "encoder_in_flight": [1, 4],
        "images": images,
        "baseline_images": baseline_images,
    }
    args.data.mkdir(parents=True, exist_ok=True)
    repos = {p: ensure_repo(args.data / f"repo-{p}", p) for p in (("int8",) if args.only == "reindex" else ("fp32", "int8"))}
    manifest = Manifest.read(repos.get("fp32", repos["int8"]))
    stamp = ModelStamp.of(manifest)
    shutil.rmtree(args.data / "milvus", ignore_errors=True)
    report: dict[str, Any] = {
        **run_header(parameters=parameters),
        "mode": "quick" if quick else "full",
        "model": "random ViT-B/32 (exact architecture, random weights)",
        "sizes": sizes,
        "search": {},
        "recall_at_10": {},
        "encoder": {},
        "reindex": {},
    }
    small = (200,) if quick else (200, 2000)  # bench.reindex_cases: incremental runs right after Triton is ready
    if args.only == "reindex":
        only_reindex({**run_header(parameters={**parameters, "reindex_cases": list(small)})}, repos["int8"], args.data, args.out, stamp, small, 200)
        return
    log(f"sizes {sizes}; generating {max(sizes)} clustered vectors")
    base = clustered_vectors(max(sizes), manifest.dimension)
    milvus, ports = start_milvus(args.data / "milvus")
    milvus_uri = local_uri(ports, args.data / "milvus")
    index = ImageIndex(milvus_uri, "bench", stamp, timeout_s=60, hnsw=HnswParams(16, 200, 64))
    try:
        for size in sizes:
            log(f"index size {size}: inserting and building HNSW")
            start = time.perf_counter()
            collection = fill_collection(index, base[:size])
            report.setdefault("index_build_s", {})[str(size)] = time.perf_counter() - start
            log("waiting for Milvus to go quiet after the bulk load (compaction, index rebuilds)")
            report.setdefault("settle_s", {})[str(size)] = waited = wait_for_quiet(milvus.pid or 0, settle_s)
            log(f"Milvus quiet after {waited:.0f} s")
            report["recall_at_10"][str(size)] = measure_recall(index, collection, base[:size], query_vectors(base[:size], 200), (32, 64, 128, 256))
            log(f"recall@10 {report['recall_at_10'][str(size)]}")
            report["search"][str(size)] = {}
            for precision, repo in repos.items():
                triton, tports = start_triton(repo, args.data / f"triton-{precision}")
                try:
                    triton_url = f"127.0.0.1:{tports.grpc}"
                    if size == sizes[0]:
                        log(f"encoder throughput {precision}")
                        report["encoder"][precision] = asyncio.run(encoder_throughput(triton_url, repo, (1, 8, 32), (1, 4), encoder_seconds))
                        folder = args.data / "jpegs"
                        photo_like_jpegs(folder, images)
                        log(f"reindex {images} JPEGs ({precision})")
                        wait_for_quiet(milvus.pid or 0, 120)
                        job, pipeline = asyncio.run(reindex_ours(repo, triton_url, milvus_uri, folder, stamp))
                        report["reindex"][f"ours_{precision}_img_per_s"] = job
                        report["reindex"][f"ours_{precision}_pipeline_img_per_s"] = pipeline
                    wait_for_quiet(milvus.pid or 0, 120)  # after the reindex's sealing, too
                    gateway = Gateway(repo, triton_url, milvus_uri, "bench", 64, args.data / f"gateway-{precision}.log")
                    try:
                        log(f"SearchText load, {precision}, {size} vectors")
                        pids = {"gateway": gateway.process.pid or 0, "triton": triton.pid or 0, "milvus": milvus.pid or 0}
                        report["search"][str(size)][f"ours_{precision}"], sent = measure_ours(gateway, queries, levels, per_level, seconds, pids)
                        if size == sizes[-1] and precision == "fp32":
                            log(f"soak {soak_s:.0f} s at concurrency 4")
                            soaked: list[str] = []
                            report["soak"] = soak(gateway, queries[::-1], soak_s, soaked)
                            check_distinct([*sent, soaked], "the levels and the soak of one gateway")
                    finally:
                        gateway.stop()
                finally:
                    triton.stop()
            log(f"baseline load, {size} vectors")
            wait_for_quiet(milvus.pid or 0, 120)
            baseline, port = start_baseline(repos["fp32"], milvus_uri, "bench", args.data / "baseline.log")
            try:
                pids = {"baseline": baseline.pid or 0, "milvus": milvus.pid or 0}
                report["search"][str(size)]["baseline"] = measure_baseline(port, queries, levels, per_level, seconds, pids)
            finally:
                baseline.stop()
        log(f"baseline reindex, {baseline_images} JPEGs one at a time")
        report["reindex"]["baseline_img_per_s"] = reindex_baseline(photo_like_jpegs(args.data / "jpegs", images)[:baseline_images], milvus_uri, stamp)
        small_runs = reindex_cases(repos["int8"], "int8", args.data, milvus_uri, stamp, small, baseline_images, report["reindex"]["baseline_img_per_s"])
        report["reindex"]["small"] = small_runs
    finally:
        index.close()
        milvus.stop(timeout_s=5)
    add_ratios(report)
    path = publish(report, args.out, "", START, END, markdown)
    write_plots(report, args.out, path.stem)
    log(f"wrote {path} and plots; updated docs/benchmarks.md")


if __name__ == "__main__":
    main()
