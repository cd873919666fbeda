"""``make bench``'s indexing part: small and large reindex runs right after the stack is ready, against the naive loop in the same run.

Each case starts Triton afresh (``devstack.triton.start_triton`` returns once both models are ready)
and at once runs an incremental reindex, as ``t2i reindex`` does after ``make up``, of N photo-like
JPEGs into a new alias (so the run creates and loads its collection, lists and hashes, runs the
pipeline, seals and checks). The whole job's img/s is set against ``bench.baseline.index_one_at_a_time``
(PyTorch in-process, one image encoded and inserted at a time) on the same JPEGs and the same Milvus.
The report's split (listing and hashing, pipeline, deletes/sealing/checks) says where a small run's
seconds go. ``python -m bench.run --only reindex`` runs this part alone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench.data import photo_like_jpegs
from core.index import ImageIndex
from core.records import ModelStamp
from devstack.triton import start_triton
from inference.triton_client import RetryPolicy, TritonEncoder
from reindex.job import Reindexer
from reindex.sources import Source


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def incremental_reindex(repo: Path, triton_url: str, milvus_uri: str, folder: Path, stamp: ModelStamp, alias: str) -> dict[str, Any]:
    """One incremental reindex of ``folder`` into ``alias`` (created by the run), as ``t2i reindex`` runs it: its figures and summary."""
    encoder = TritonEncoder(triton_url, repo, RetryPolicy(timeout_s=300))
    index = ImageIndex(milvus_uri, alias, stamp, timeout_s=30, retry_budget_s=30)
    try:
        if not await encoder.ready():  # reindex.main checks it too
            raise RuntimeError(f"Triton at {triton_url} is not ready")
        report = await Reindexer(encoder, index, batch_size=32, workers=2).run(Source(str(folder)), progress=False)
    finally:
        await encoder.close()
        index.close()
    if report.exit_code() != 0 or report.indexed != report.scanned:
        raise RuntimeError(f"the reindex did not index every file: {report.summary()}")
    return {
        "images": report.indexed,
        "img_per_s": report.images_per_second,
        "pipeline_img_per_s": report.pipeline_images_per_second,
        "seconds": report.seconds,
        "listing_s": report.listing_seconds,
        "pipeline_s": report.pipeline_seconds,
        "finishing_s": report.finishing_seconds,
        "summary": report.summary(),
    }


def baseline_rate(files: list[Path], milvus_uri: str, stamp: ModelStamp, alias: str) -> float:
    """img/s of the naive loop over ``files`` (its model is built before the clock starts, as a running service has it)."""
    from bench.baseline import baseline_model, index_one_at_a_time

    index = ImageIndex(milvus_uri, alias, stamp, timeout_s=30)
    try:
        collection = index.ensure_active()
        return index_one_at_a_time(baseline_model("random"), files, lambda rows: index.upsert(collection, rows))
    finally:
        index.close()


def reindex_cases(
    repo: Path, precision: str, data: Path, milvus_uri: str, stamp: ModelStamp, counts: tuple[int, ...], baseline_images: int, baseline: float | None = None
) -> dict[str, Any]:
    """Each of ``counts`` JPEGs reindexed right after a fresh Triton is ready, then the baseline on ``baseline_images`` of them.

    ``baseline``: its img/s measured already in this run on ``baseline_images`` of the same JPEGs (``make bench`` does).

    Returns ``{"cases": {count: figures}, "baseline_img_per_s", "baseline_images", "ratios": {count: job / baseline}}``.
    """
    pool = photo_like_jpegs(data / "jpegs", max(*counts, baseline_images))
    result: dict[str, Any] = {"precision": precision, "cases": {}}
    for count in counts:
        folder = data / f"reindex-{count}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for path in pool[:count]:
            os.link(path, folder / path.name)  # the same bytes, no copy
        triton, ports = start_triton(repo, data / f"triton-reindex-{precision}")
        try:
            log(f"reindex {count} JPEGs ({precision}) right after Triton is ready")
            case = asyncio.run(incremental_reindex(repo, f"127.0.0.1:{ports.grpc}", milvus_uri, folder, stamp, f"bench_small_{count}_{int(time.time())}"))
        finally:
            triton.stop()
        log(case["summary"])
        result["cases"][str(count)] = case
    if baseline is None:
        log(f"baseline: {baseline_images} JPEGs one at a time")
        baseline = baseline_rate(pool[:baseline_images], milvus_uri, stamp, f"bench_small_baseline_{int(time.time())}")
    result["baseline_images"], result["baseline_img_per_s"] = baseline_images, baseline
    result["ratios"] = {count: case["img_per_s"] / baseline for count, case in result["cases"].items()}
    return result


def markdown(result: dict[str, Any]) -> str:
    """A table of the cases against the baseline."""
    lines = [
        f"| JPEGs | whole job img/s | pipeline img/s | listing and hashing s | pipeline s | deletes, sealing and checks s | job vs baseline ({result['precision']}) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for count, case in result["cases"].items():
        lines.append(
            f"| {int(count):,} | {case['img_per_s']:.1f} | {case['pipeline_img_per_s']:.1f} | {case['listing_s']:.1f} | {case['pipeline_s']:.1f} | "
            f"{case['finishing_s']:.1f} | {result['ratios'][count]:.2f}× |"
        )
    lines.append(f"| baseline, {result['baseline_images']} one at a time | {result['baseline_img_per_s']:.1f} | - | - | - | - | 1.00× |")
    return "\n".join(lines)


def only_reindex(report: dict[str, Any], repo: Path, data: Path, out: Path, stamp: ModelStamp, counts: tuple[int, ...], baseline_images: int) -> Path:
    """``bench.run --only reindex``: a Milvus of its own, the cases of ``repo``, and ``<out>/<date>-<host>-reindex.json`` (docs untouched)."""
    import json

    from devstack.milvus import local_uri, start_milvus

    shutil.rmtree(data / "milvus", ignore_errors=True)
    milvus, ports = start_milvus(data / "milvus")
    try:
        report["reindex"] = {"small": reindex_cases(repo, "int8", data, local_uri(ports, data / "milvus"), stamp, counts, baseline_images)}
    finally:
        milvus.stop(timeout_s=5)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{report['date']}-{report['host']}-reindex.json"
    path.write_text(json.dumps(report, indent=2))
    print(markdown(report["reindex"]["small"]))
    log(f"wrote {path}")
    return path
