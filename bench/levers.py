"""``make bench-levers``: what each speed lever is worth, measured one change at a time in one run.

The reference is the shipped configuration with the int8 towers. Each variant changes one thing
(a Triton config line, a gateway setting, the precision) and runs the same SearchText load through
the real stack (gateway, Triton, Milvus on loopback, random ViT-B/32). The reference runs first and
last, so drift on the shared cores shows. Two levers are measured below the gateway, where they
act: the text tower's sequence length (through Triton) and the reindex pipeline (Reindexer
settings). Writes ``bench/results/<date>-<host>-levers.json`` and the table between the
``levers`` markers in ``docs/benchmarks.md``. Nothing here is a test assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import clustered_vectors, photo_like_jpegs
from bench.load import run_load
from bench.procs import cpu_seconds, wait_for_quiet
from bench.queries import sentences
from bench.report import measured, publish, run_header
from bench.run import ROOT, Gateway, ensure_repo, fill_collection, log, reindex_baseline
from core.index import ImageIndex
from core.logs import configure_logging
from core.manifest import TEXT_MODEL, VISION_MODEL, Manifest
from core.records import HnswParams, ModelStamp
from devstack.milvus import local_uri, start_milvus
from devstack.triton import start_triton
from inference.tokenizer import TokenBatch
from inference.triton_client import RetryPolicy, TritonEncoder
from reindex.job import Reindexer
from reindex.sources import Source
from t2i.client import GatewayClient

START, END = "<!-- levers:start -->", "<!-- levers:end -->"
Edit = Callable[[str], str]


def no_dynamic_batching(config: str) -> str:
    start = config.index("dynamic_batching {")
    return config[:start] + config[config.index("}", start) + 1 :]


def spinning(config: str) -> str:
    return config.replace('"allow_spinning" value { string_value: "0" }', '"allow_spinning" value { string_value: "1" }')


def queue_delay(microseconds: int) -> Edit:
    return lambda config: config.replace("max_queue_delay_microseconds: 500", f"max_queue_delay_microseconds: {microseconds}")


def instances(count: int, threads: int) -> Edit:
    return lambda config: config.replace("count: 1", f"count: {count}").replace(
        '"intra_op_threads" value { string_value: "2" }', f'"intra_op_threads" value {{ string_value: "{threads}" }}'
    )


@dataclass(frozen=True)
class Variant:
    """One change against the reference: a text-model config edit, gateway settings or the precision."""

    name: str
    precision: str = "int8"
    text_config: Edit | None = None
    env: dict[str, str] = field(default_factory=dict)


VARIANTS = (
    Variant("reference: shipped config, int8"),
    Variant("fp32 towers instead of int8", precision="fp32"),
    Variant("alias resolved on every request (T2I_ALIAS_REFRESH_S=0)", env={"T2I_ALIAS_REFRESH_S": "0"}),
    Variant("Triton dynamic batching off", text_config=no_dynamic_batching),
    Variant("dynamic batching queue delay 2 ms (shipped 0.5 ms)", text_config=queue_delay(2000)),
    Variant("idle onnxruntime threads spin (onnxruntime's default; shipped: off)", text_config=spinning),
    Variant("2 model instances x 1 thread (shipped 1 x 2)", text_config=instances(2, 1)),
    Variant("reference again (drift check)"),
)


def variant_repo(source: Path, target: Path, text_config: Edit | None) -> Path:
    """A copy of ``source`` (ONNX files linked, not copied) with the text model's CPU config edited."""
    shutil.rmtree(target, ignore_errors=True)
    for model in (TEXT_MODEL, VISION_MODEL):
        shutil.copytree(source / model, target / model, ignore=shutil.ignore_patterns("*.onnx", "__pycache__"))
        for onnx_file in (source / model).glob("*/*.onnx"):
            (target / model / onnx_file.parent.name / onnx_file.name).symlink_to(onnx_file.resolve())
    shutil.copyfile(source / "manifest.json", target / "manifest.json")
    if text_config is not None:
        config = target / TEXT_MODEL / "configs" / "cpu.pbtxt"
        config.write_text(text_config(config.read_text()))
    return target


def measure_search(gateway: Gateway, queries: list[str], requests: int, pids: dict[str, int]) -> dict[str, Any]:
    """c=1 unique, c=1 repeated (cache hit) and c=16 unique SearchText load; CPU ms per query by process at c=16."""
    client = GatewayClient(gateway.address, timeout_s=60, token=gateway.token)
    try:
        for i in range(5):
            client.search_text(f"warm up query number {i}", top_k=10)
        unique = run_load(lambda i: client.search_text(queries[i % len(queries)], top_k=10), 1, requests, 60).as_dict()
        client.search_text("a photo of a repeated query", top_k=10)
        cached = run_load(lambda i: client.search_text("a photo of a repeated query", top_k=10), 1, requests, 60).as_dict()
        offset = requests
        own = os.getpid()  # the servers are this process's children: count the load client alone
        before = {name: cpu_seconds(pid, pid != own) for name, pid in pids.items()}
        loaded = run_load(lambda i: client.search_text(queries[(offset + i) % len(queries)], top_k=10), 16, requests * 3, 60).as_dict()
        cpu = {name: (cpu_seconds(pid, pid != own) - before[name]) * 1000 / max(1, loaded["requests"]) for name, pid in pids.items()}
    finally:
        client.close()
    return {"c1_unique": unique, "c1_cached": cached, "c16_unique": loaded, "c16_cpu_ms_per_query": cpu}


async def sequence_length(url: str, repo: Path, queries: list[str], calls: int) -> dict[str, float]:
    """Batch-1 text-tower latency through Triton: padded to 77, to 16 (the old bucket), to the shipped buckets."""
    encoder = TritonEncoder(url, repo, RetryPolicy(timeout_s=60))
    result: dict[str, float] = {}
    try:
        batches = [encoder.tokenizer.encode([q]) for q in queries[:calls]]
        result["mean_query_tokens"] = float(np.mean([b.lengths[0] for b in batches]))
        for name, width in (("padded_to_77", 77), ("padded_to_16", 16), ("shipped_buckets", 0)):
            timings = []
            for batch in batches:
                tokens = batch
                if width:
                    ids = np.full((1, width), encoder.tokenizer.pad_id, np.int64)
                    mask = np.zeros((1, width), np.int64)
                    ids[0, : tokens.lengths[0]], mask[0, : tokens.lengths[0]] = tokens.input_ids[0, : tokens.lengths[0]], 1
                    tokens = TokenBatch(ids, mask, tokens.lengths, tokens.truncated)
                start = time.perf_counter()
                await encoder.encode_tokens(tokens)
                timings.append((time.perf_counter() - start) * 1000)
            result[f"{name}_p50_ms"] = float(np.median(timings[3:]))
    finally:
        await encoder.close()
    return result


async def reindex_pipeline(url: str, repo: Path, milvus_uri: str, milvus_pid: int, folder: Path, stamp: ModelStamp) -> dict[str, dict[str, float]]:
    """Whole-job and pipeline img/s of a full reindex under several pipeline settings."""
    settings = {
        "shipped (batch 32, 2 decode processes, 2 batches in flight)": (32, 2, 2),
        "1 batch in flight": (32, 2, 1),
        "1 decode process": (32, 1, 2),
        "one image per Triton call (batch 1)": (1, 2, 2),
    }
    result = {}
    for name, (batch, workers, in_flight) in settings.items():
        wait_for_quiet(milvus_pid, 120)
        encoder = TritonEncoder(url, repo, RetryPolicy(timeout_s=300))
        index = ImageIndex(milvus_uri, "levers_reindex", stamp, timeout_s=30)
        try:
            report = await Reindexer(encoder, index, batch_size=batch, workers=workers, in_flight=in_flight).run(Source(str(folder)), full=True, progress=False)
            result[name] = {"job": report.images_per_second, "pipeline": report.pipeline_images_per_second}
        finally:
            await encoder.close()
            index.close()
    return result


def reindex_one_at_a_time(milvus_uri: str, milvus_pid: int, files: list[Path], stamp: ModelStamp) -> float:
    """The hand-written baseline's indexer (PyTorch, one image per step) on the same files, img/s."""
    wait_for_quiet(milvus_pid, 120)
    return reindex_baseline(files, milvus_uri, stamp)


def render(report: dict[str, Any]) -> str:
    reference = report["search"][VARIANTS[0].name]
    lines = [
        f"{measured(report)}, {report['size']:,} vectors, random ViT-B/32. Raw data: `{report['path']}`.",
        "",
        "SearchText end to end, one change at a time (ratio: the reference's figure over the variant's for latency, "
        "the variant's over the reference's for queries/s; below 1.0× means the change is worse):",
        "",
        "| variant | c=1 p50 ms | cache-hit p50 ms | c=16 qps | c=16 p99 ms | c=16 CPU ms/query (Triton, all) | c=1 p50 vs reference | c=16 qps vs reference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, run in report["search"].items():
        one, hit, sixteen = run["c1_unique"], run["c1_cached"], run["c16_unique"]
        lines.append(
            f"| {name} | {one['p50_ms']:.1f} | {hit['p50_ms']:.1f} | {sixteen['qps']:.1f} | {sixteen['p99_ms']:.1f} | "
            f"{run['c16_cpu_ms_per_query']['triton']:.1f}, {sum(run['c16_cpu_ms_per_query'].values()):.1f} | "
            f"{reference['c1_unique']['p50_ms'] / one['p50_ms']:.2f}× | {sixteen['qps'] / reference['c16_unique']['qps']:.2f}× |"
        )
    cpu = reference["c16_cpu_ms_per_query"]
    lines += [
        "",
        "CPU time per query at c=16 (reference, first run), by process: "
        + ", ".join(f"{name} {ms:.1f} ms" for name, ms in cpu.items())
        + f"; total {sum(cpu.values()):.1f} ms, so 2 cores cap this stack at about {2000 / sum(cpu.values()):.0f} queries/s.",
    ]
    seq = report["sequence_length"]
    lines += [
        "",
        f"Text tower through Triton, batch 1, int8, the benchmark's queries (mean {seq['mean_query_tokens']:.1f} tokens): "
        f"padded to 77: {seq['padded_to_77_p50_ms']:.1f} ms; padded to 16: {seq['padded_to_16_p50_ms']:.1f} ms; "
        f"shipped buckets (multiples of 4): {seq['shipped_buckets_p50_ms']:.1f} ms.",
    ]
    baseline = report["reindex_baseline_img_per_s"]
    lines += [
        "",
        f"| reindex setting ({report['reindex_images']} JPEGs, int8) | whole job img/s | pipeline img/s | pipeline vs baseline |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {name} | {rate['job']:.1f} | {rate['pipeline']:.1f} | {rate['pipeline'] / baseline:.2f}× |" for name, rate in report["reindex"].items()]
    lines.append(f"| baseline: PyTorch, one image at a time (first {report['reindex_baseline_images']} files) | - | {baseline:.1f} | 1.00× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100_000, help="vectors in the index (default 100000)")
    parser.add_argument("--requests", type=int, default=150, help="requests per load level (c=16 sends three times as many)")
    parser.add_argument("--images", type=int, default=300, help="JPEGs for the reindex pipeline comparison")
    parser.add_argument("--settle", type=float, default=600.0, help="the most seconds to wait for Milvus to go quiet after the bulk load")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    configure_logging("WARNING")  # quiet pymilvus's tracebacks for expected misses (no alias yet)
    repos = {p: ensure_repo(args.data / f"repo-{p}", p) for p in ("fp32", "int8")}
    manifest = Manifest.read(repos["int8"])
    stamp = ModelStamp.of(manifest)
    report: dict[str, Any] = {
        **run_header(
            parameters={
                "size": args.size,
                "requests": args.requests,
                "images": args.images,
                "settle_max_s": args.settle,
                "variants": [v.name for v in VARIANTS],
            }
        ),
        "size": args.size,
        "search": {},
        "reindex_images": args.images,
    }
    queries = sentences()
    shutil.rmtree(args.data / "milvus-levers", ignore_errors=True)
    milvus, ports = start_milvus(args.data / "milvus-levers")
    milvus_uri = local_uri(ports, args.data / "milvus-levers")
    index = ImageIndex(milvus_uri, "levers", stamp, timeout_s=60, hnsw=HnswParams(16, 200, 64))
    try:
        log(f"filling {args.size} vectors")
        fill_collection(index, clustered_vectors(args.size, manifest.dimension))
        log(f"Milvus quiet after {wait_for_quiet(milvus.pid or 0, args.settle):.0f} s")
        for number, variant in enumerate(VARIANTS):
            repo = variant_repo(repos[variant.precision], args.data / "repo-variant", variant.text_config)
            triton, tports = start_triton(repo, args.data / "triton-variant")
            try:
                url = f"127.0.0.1:{tports.grpc}"
                if number == len(VARIANTS) - 1:  # below the gateway, last: the reindex leaves Milvus busy
                    log("sequence length through Triton")
                    report["sequence_length"] = asyncio.run(sequence_length(url, repo, queries, 60))
                    folder = args.data / f"jpegs-{args.images}"
                    files = photo_like_jpegs(folder, args.images)
                    log("reindex pipeline settings")
                    report["reindex"] = asyncio.run(reindex_pipeline(url, repo, milvus_uri, milvus.pid or 0, folder, stamp))
                    log("baseline indexer, one image at a time")
                    report["reindex_baseline_images"] = min(len(files), 100)
                    report["reindex_baseline_img_per_s"] = reindex_one_at_a_time(milvus_uri, milvus.pid or 0, files[:100], stamp)
                wait_for_quiet(milvus.pid or 0, 120)
                gateway = Gateway(repo, url, milvus_uri, "levers", 64, args.data / "gateway-variant.log", variant.env)  # fresh cache each time
                try:
                    log(f"SearchText load: {variant.name}")
                    pids = {"triton": triton.pid or 0, "gateway": gateway.process.pid or 0, "milvus": milvus.pid or 0, "load client": os.getpid()}
                    if number == 0:  # a discarded pass: the first load after a bulk insert wakes Milvus's background work
                        measure_search(gateway, queries[::-1], args.requests, pids)
                    report["search"][variant.name] = measure_search(gateway, queries, args.requests, pids)
                finally:
                    gateway.stop()
            finally:
                triton.stop()
    finally:
        index.close()
        milvus.stop(timeout_s=5)
    path = publish(report, args.out, "-levers", START, END, render)
    log(f"wrote {path}; updated docs/benchmarks.md")


if __name__ == "__main__":
    main()
