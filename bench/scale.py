"""``make bench-scale``: N clustered 512-d vectors on one node, on two quantized or disk indexes (issue 23, item 4).

A long job, not a test: run it in the background (``nohup make bench-scale SCALE_ARGS='--size 10000000' &``).

1. Checks disk (and says what the RAM estimate is) before it starts; a shortfall stops it with the figures.
2. Streams ``--size`` clustered unit vectors (``bench.data.clustered_vectors``'s distribution, made
   batch by batch from a seed, so they never sit in memory at once) into a fresh local Milvus
   (``devstack.milvus``, its own data folder), with a progress bar and the ingest rate. The
   collection is the gateway's own schema (``ImageIndex.new_collection``), with its HNSW index dropped
   before the first row, so no index is built while rows arrive.
3. While the batches stream by, the exact top-10 of 1,000 queries (a stored vector of the first
   batch plus noise, as ``bench.data.query_vectors`` makes them) is kept with numpy, per query.
4. For each index type (``--indexes``, default IVF_SQ8 and IVF_PQ; the wheel's Milvus 2.3.5 fails every DISKANN build): builds it (build time), loads
   the collection (load time), records Milvus's RSS (the server and its children) and the data
   folder's disk use, measures recall@10 against the exact top-10 at each search value (``nprobe``
   for IVF, ``search_list`` for DiskANN), direct Milvus search latency (pymilvus, 1 and 16 threads)
   at each value, and, unless ``--no-gateway``, SearchText p50/p99 at 1 and 16 clients through a real
   gateway and an int8 Triton. The gateway sends Milvus its HNSW parameters only (``{"ef": 64}``), so
   an IVF or DiskANN search through it runs at Milvus's defaults for that index; the recall at
   exactly those parameters (``ImageIndex.search``, the gateway's own call) is recorded beside it.
5. Writes ``bench/results/<date>-<host>-scale-<size>.json`` (``run_header``: machine, CPU flags,
   date, commit, parameters) and the table between the ``scale`` markers of docs/benchmarks.md
   (``--no-publish`` skips the doc).

State (the Milvus folder, ``state.json``, the running exact top-10) lives under
``data/bench/scale-<size>``: a run stopped during the ingest or between index types resumes from
its last finished batch or index type when started again with the same arguments (``--fresh``
starts over).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.load import run_load
from bench.procs import wait_for_quiet
from bench.report import ROOT, measured, publish, run_header

START, END = "<!-- scale:start -->", "<!-- scale:end -->"
ALIAS = "scale"
K = 10
SEARCH_VALUES = {"IVF_SQ8": [8, 16, 32, 64], "IVF_PQ": [8, 16, 32, 64], "IVF_FLAT": [8, 16, 32, 64], "DISKANN": [16, 32, 64, 100]}
SEARCH_KEY = {"DISKANN": "search_list"}  # the rest: nprobe
ROW_BYTES_EXTRA = 120  # id, uri, labels, hash, source, five int64s, format: about this much per row beside the vector


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- data -------------------------------------------------------------------------------------


def centres(dim: int, seed: int, clusters: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((clusters, dim)).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def batch_vectors(number: int, size: int, dim: int, seed: int, middles: np.ndarray, spread: float) -> np.ndarray:
    """Batch ``number`` of the stream: the same vectors whichever batch a (resumed) run starts at."""
    rng = np.random.default_rng([seed, number])
    chunk = middles[rng.integers(0, len(middles), size)] + spread * rng.standard_normal((size, dim)).astype(np.float32) / np.sqrt(dim)
    return (chunk / np.linalg.norm(chunk, axis=1, keepdims=True)).astype(np.float32)


def batch_sizes(count: int, batch: int) -> list[int]:
    return [min(batch, count - start) for start in range(0, count, batch)]


def make_queries(first: np.ndarray, count: int, seed: int, noise: float = 0.4) -> np.ndarray:
    """``count`` queries near stored vectors of the first batch (every batch is drawn alike, so any batch would do)."""
    rng = np.random.default_rng([seed, 1_000_001])
    picked = first[rng.choice(len(first), count, replace=False)]
    queries = picked + noise * rng.standard_normal(picked.shape).astype(np.float32) / np.sqrt(first.shape[1])
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


class RunningTopK:
    """The exact top-k of each query over every batch seen so far (scores and global row numbers)."""

    def __init__(self, queries: int, k: int = K):
        self.scores = np.full((queries, k), -np.inf, dtype=np.float32)
        self.ids = np.full((queries, k), -1, dtype=np.int64)
        self.k = k

    def add(self, queries: np.ndarray, batch: np.ndarray, offset: int) -> None:
        scores = queries @ batch.T
        k = min(self.k, batch.shape[0])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        merged_scores = np.concatenate([self.scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        merged_ids = np.concatenate([self.ids, top + offset], axis=1)
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(merged_scores, order, axis=1)
        self.ids = np.take_along_axis(merged_ids, order, axis=1)

    def save(self, path: Path) -> None:
        np.savez(path, scores=self.scores, ids=self.ids)

    @classmethod
    def load(cls, path: Path) -> RunningTopK:
        data = np.load(path)
        out = cls(data["ids"].shape[0], data["ids"].shape[1])
        out.scores, out.ids = data["scores"], data["ids"]
        return out


def recall_at_k(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / truth.shape[1] for f, t in zip(found, truth, strict=True)]))


# --- the machine ------------------------------------------------------------------------------


def family_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants (the sandbox wrapper, the milvus binary) in MiB."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry.name)] = int(fields.get("PPid", "0").strip() or 0)
        rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0]) if "VmRSS" in fields else 0
    family = {pid}
    for _ in range(6):
        family |= {child for child, parent in parents.items() if parent in family}
    return sum(rss.get(member, 0) for member in family) / 1024


def disk_mb(folder: Path) -> float:
    """Bytes on disk under ``folder`` (links not followed: the shared Milvus binaries are not counted), in MiB."""
    total = 0
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in files + dirs:
            try:
                stat = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, name)):
                total += stat.st_blocks * 512
    return total / 2**20


def estimate(size: int, dim: int, indexes: list[str], pq_m: int) -> dict[str, float]:
    """What the run will need, in GB (10^9 bytes): raw fp32, Milvus's binlogs and WAL, each index, the peak on disk."""
    raw = size * dim * 4
    binlogs = size * (dim * 4 + ROW_BYTES_EXTRA)
    wal = min(binlogs, 8192 * 2**20)  # rocksmq keeps up to retentionSizeInMB (8 GB as shipped)
    index_bytes = {
        "IVF_SQ8": size * dim,
        "IVF_PQ": size * pq_m,
        "IVF_FLAT": size * dim * 4,
        # DiskANN writes the vectors again beside its graph (MaxDegree 56) and PQ codes, in storage and in the query node's local copy.
        "DISKANN": 2 * size * (dim * 4 + 56 * 4 + 8),
    }
    out = {"raw_fp32_gb": raw / 1e9, "binlogs_gb": binlogs / 1e9, "wal_gb": wal / 1e9}
    for name in indexes:
        out[f"{name}_index_gb"] = index_bytes[name] / 1e9
    out["peak_disk_gb"] = (binlogs + wal + max(index_bytes[name] for name in indexes) + 1e9) / 1e9  # one index at a time, +1 GB slack
    return out


def check_disk(folder: Path, need_gb: float) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(folder).free / 1e9
    if free_gb < need_gb:
        sys.exit(
            f"bench.scale: not enough disk under {folder}: about {need_gb:.1f} GB needed (binlogs + WAL + the largest index), "
            f"{free_gb:.1f} GB free. Free space, choose another --data, a smaller --size, or other --indexes."
        )
    return free_gb


def available_ram_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


# --- Milvus -----------------------------------------------------------------------------------


def patch_yaml(path: Path, mmap_dir: Path | None, segment_mb: int) -> bool:
    """Milvus's config for this bench: the query node loads disk indexes; mmap and the segment size when asked. True when it changed."""
    text = original = path.read_text()
    head, sep, tail = ("\n" + text).partition("\nqueryNode:\n")
    if not sep:
        raise RuntimeError(f"{path} has no queryNode section")
    tail = tail.replace("  enableDisk: false", "  enableDisk: true", 1)  # the first one after queryNode: is its own
    if mmap_dir is not None and not tail.startswith(f"  mmapDirPath: {mmap_dir}\n"):
        tail = f"  mmapDirPath: {mmap_dir}\n" + tail
    text = (head + sep + tail)[1:]
    if segment_mb != 512:
        text = text.replace("    maxSize: 512 # Maximum size of a segment in MB", f"    maxSize: {segment_mb} # Maximum size of a segment in MB", 1)
    if text != original:
        path.write_text(text)
    return text != original


def start_patched(folder: Path, mmap_dir: Path | None, segment_mb: int) -> tuple[Any, Any]:
    """Milvus on ``folder``, restarted once on the same ports when its config had to be patched first."""
    from devstack.milvus import start_milvus

    milvus, ports = start_milvus(folder)
    if patch_yaml(folder / "configs" / "milvus.yaml", mmap_dir, segment_mb):
        milvus.stop(timeout_s=30)
        milvus, ports = start_milvus(folder, ports)
    return milvus, ports


class BuildFailed(RuntimeError):
    """Milvus keeps failing to build the index (it retries forever, its state stays InProgress)."""


def wait_indexed(client: Any, collection: str, timeout_s: float, log_path: Path, log_from: int, failures: int = 3) -> dict[str, Any]:
    """Wait until the index covers every row; ``BuildFailed`` when Milvus's log shows ``failures`` failed builds since ``log_from``."""
    end = time.monotonic() + timeout_s
    described: dict[str, Any] = {}
    while time.monotonic() < end:
        described = client.describe_index(collection, client.list_indexes(collection)[0], timeout=60)
        total, indexed = int(described.get("total_rows", 0)), int(described.get("indexed_rows", 0))
        if total and indexed >= total and int(described.get("pending_index_rows", 0)) == 0:
            return described
        with log_path.open("rb") as handle:
            handle.seek(log_from)
            failed = [line for line in handle.read().decode(errors="replace").splitlines() if '"failed to build index"' in line]
        if len(failed) >= failures:
            reason = failed[-1].split("[error=", 1)[-1].split("] [errorVerbose", 1)[0].replace("\\n", " ")
            raise BuildFailed(f"Milvus failed to build the index {len(failed)} times: {reason}")
        time.sleep(2.0)
    raise TimeoutError(f"index not built in {timeout_s:.0f} s: {described}")


def index_params(kind: str, nlist: int, pq_m: int) -> dict[str, Any]:
    if kind == "DISKANN":
        return {}
    if kind == "IVF_PQ":
        return {"nlist": nlist, "m": pq_m, "nbits": 8}
    return {"nlist": nlist}


def search_params(kind: str, value: int) -> dict[str, Any]:
    return {"metric_type": "COSINE", "params": {SEARCH_KEY.get(kind, "nprobe"): value}}


def ann_ids(client: Any, collection: str, queries: np.ndarray, params: dict[str, Any]) -> list[list[int]]:
    found: list[list[int]] = []
    for start in range(0, len(queries), 100):
        hits = client.search(collection, data=queries[start : start + 100].tolist(), limit=K, search_params=params, anns_field="vector", timeout=600)
        found += [[int(str(hit["id"])[1:]) for hit in row] for row in hits]
    return found


def direct_latency(client: Any, collection: str, queries: np.ndarray, params: dict[str, Any], requests: int) -> dict[str, dict[str, float]]:
    """Milvus alone (pymilvus, one query a call): c=1 and c=16."""

    def call(i: int) -> None:
        client.search(collection, data=[queries[i % len(queries)].tolist()], limit=K, search_params=params, anns_field="vector", timeout=60)

    for i in range(5):
        call(i)
    return {f"c{c}": run_load(call, c, requests * (3 if c > 1 else 1), 300).as_dict() for c in (1, 16)}


# --- the run ----------------------------------------------------------------------------------


def ingest(args: argparse.Namespace, work: Path, state: dict[str, Any], index: Any, client: Any) -> None:
    from tqdm import tqdm

    from core.records import NO_METADATA_ROW

    sizes = batch_sizes(args.size, args.batch)
    middles = centres(args.dim, args.seed, args.clusters)
    truth_path = work / "truth.npz"
    queries_path = work / "queries.npy"
    done = state["batches_done"]
    truth = RunningTopK.load(truth_path) if done else RunningTopK(args.queries)
    queries = np.load(queries_path) if done else None
    offset = sum(sizes[:done])
    spent = state.get("ingest_s", 0.0)
    bar = tqdm(total=args.size, initial=offset, unit="vec", unit_scale=True, desc="ingest", dynamic_ncols=True, file=sys.stderr)
    for number in range(done, len(sizes)):
        vectors = batch_vectors(number, sizes[number], args.dim, args.seed, middles, args.spread)
        if queries is None:
            queries = make_queries(vectors, args.queries, args.seed)
            np.save(queries_path, queries)
        started = time.perf_counter()
        rows = [
            {
                "id": f"v{offset + i}",
                "vector": vectors[i].tolist(),
                "uri": f"synthetic://{offset + i}",
                "labels": [],
                "content_hash": "",
                "source": "",
                **NO_METADATA_ROW,
            }
            for i in range(len(vectors))
        ]
        for start in range(0, len(rows), args.insert_rows):
            part = rows[start : start + args.insert_rows]
            # The first batch after a resume may be partly in already: upsert replaces those rows instead of doubling them.
            (client.upsert if number == done and done else client.insert)(state["collection"], part, timeout=600)
        spent += time.perf_counter() - started
        truth.add(queries, vectors, offset)
        offset += len(vectors)
        truth.save(truth_path)
        state.update(batches_done=number + 1, ingest_s=spent)
        save_state(work, state)
        bar.update(len(vectors))
        bar.set_postfix(rate=f"{offset / spent:,.0f} vec/s (insert only)")
    bar.close()


def save_state(work: Path, state: dict[str, Any]) -> None:
    tmp = work / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(work / "state.json")


def measure_index(args: argparse.Namespace, work: Path, kind: str, state: dict[str, Any], index: Any, client: Any, milvus: Any) -> dict[str, Any]:
    from core.records import HnswParams

    collection = state["collection"]
    truth = RunningTopK.load(work / "truth.npz").ids
    queries = np.load(work / "queries.npy")
    client.release_collection(collection, timeout=600)
    for name in client.list_indexes(collection):
        client.drop_index(collection, name, timeout=600)
    params = client.prepare_index_params()
    params.add_index("vector", index_type=kind, metric_type="COSINE", params=index_params(kind, args.nlist, args.pq_m))
    log(f"{kind}: building {index_params(kind, args.nlist, args.pq_m) or 'defaults'}")
    milvus_log = work / "milvus" / "logs" / "milvus.log"
    log_from = milvus_log.stat().st_size if milvus_log.is_file() else 0
    started = time.perf_counter()
    client.create_index(collection, params, timeout=600, sync=False)  # pymilvus's own wait gives up after the call's timeout
    described = wait_indexed(client, collection, args.build_timeout, milvus_log, log_from)
    build_s = time.perf_counter() - started
    log(f"{kind}: built in {build_s:.1f} s; loading")
    rss_before_load = family_rss_mb(milvus.pid or 0)
    started = time.perf_counter()
    client.load_collection(collection, timeout=3600)
    load_s = time.perf_counter() - started
    wait_for_quiet(milvus.pid or 0, 300)
    result: dict[str, Any] = {
        "index_params": index_params(kind, args.nlist, args.pq_m),
        "build_s": round(build_s, 1),
        "load_s": round(load_s, 1),
        "indexed_rows": int(described.get("indexed_rows", 0)),
        "rss_before_load_mb": round(rss_before_load, 0),
        "rss_loaded_mb": round(family_rss_mb(milvus.pid or 0), 0),
        "disk_mb": round(disk_mb(work / "milvus"), 0),
        "search_key": SEARCH_KEY.get(kind, "nprobe"),
        "values": {},
    }
    for value in args.values.get(kind, SEARCH_VALUES[kind]):
        sp = search_params(kind, value)
        started = time.perf_counter()
        recall = recall_at_k(ann_ids(client, collection, queries, sp), truth)
        batch_s = time.perf_counter() - started
        latency = direct_latency(client, collection, queries, sp, args.requests)
        result["values"][str(value)] = {"recall_at_10": round(recall, 4), "batched_qps": round(len(queries) / batch_s, 1), "milvus": latency}
        log(
            f"{kind} {result['search_key']}={value}: recall@10 {recall:.3f}, Milvus p50 {latency['c1']['p50_ms']:.1f} ms c=1, p99 {latency['c16']['p99_ms']:.1f} ms c=16"
        )
    index.hnsw = HnswParams(index.hnsw.m, index.hnsw.ef_construction, 64)
    gateway_found = [[int(h.id[1:]) for h in index.search(collection, q, K)] for q in queries]
    result["gateway_params"] = {
        "sent": {"ef": 64},
        "recall_at_10": round(recall_at_k(gateway_found, truth), 4),
    }
    # Which measured value Milvus fell back to: the values whose ids match the gateway call's on every query.
    result["gateway_params"]["same_results_as"] = [
        value for value in result["values"] if ann_ids(client, collection, queries[:200], search_params(kind, int(value))) == gateway_found[:200]
    ]
    log(f"{kind}: recall@10 at the gateway's parameters {result['gateway_params']['recall_at_10']:.3f}")
    result["rss_after_search_mb"] = round(family_rss_mb(milvus.pid or 0), 0)
    return result


def gateway_latency(args: argparse.Namespace, work: Path, uri: str, milvus: Any) -> dict[str, Any]:
    """SearchText through a real gateway and an int8 Triton: c=1 and c=16, unique queries."""
    from bench.queries import sentences
    from bench.run import Gateway, ensure_repo, unique_sweep
    from devstack.triton import start_triton
    from t2i.client import GatewayClient

    repo = ensure_repo(args.data / "repo-int8", "int8")
    triton, tports = start_triton(repo, work / "triton")
    try:
        gateway = Gateway(repo, f"127.0.0.1:{tports.grpc}", uri, ALIAS, 64, work / "gateway.log")
        client = GatewayClient(gateway.address, timeout_s=60, token=gateway.token)
        try:
            for i in range(5):
                client.search_text(f"warm up query number {i}", top_k=K)
            wait_for_quiet(milvus.pid or 0, 60)
            sweep, _ = unique_sweep(lambda text: client.search_text(text, top_k=K), sentences(), (1, 16), args.requests, 300)
        finally:
            client.close()
            gateway.stop()
    finally:
        triton.stop()
    return {f"c{level['concurrency']}": level for level in sweep}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from core.index import ImageIndex
    from core.manifest import Manifest
    from core.records import ModelStamp
    from devstack.milvus import local_uri

    work = args.data / f"scale-{args.size}"
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    parameters = {k: v for k, v in vars(args).items() if k not in {"data", "out", "fresh", "no_publish", "values", "build_timeout"}} | {
        "values": {kind: args.values.get(kind, SEARCH_VALUES[kind]) for kind in args.indexes},
        "top_k": K,
    }
    state_path = work / "state.json"
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if state and state.get("parameters") != parameters:
        sys.exit(f"bench.scale: {work} holds a run with other parameters ({state.get('parameters')}); pass --fresh to start over")
    needs = estimate(args.size, args.dim, args.indexes, args.pq_m)
    free_gb = check_disk(work, needs["peak_disk_gb"] - disk_mb(work) * 2**20 / 1e9)
    ram_gb = available_ram_gb()
    log(
        f"{args.size:,} x {args.dim} fp32 = {needs['raw_fp32_gb']:.2f} GB raw; disk needed about {needs['peak_disk_gb']:.1f} GB, {free_gb:.1f} GB free; {ram_gb:.1f} GB RAM available"
    )
    state.setdefault("parameters", parameters)
    state.setdefault("batches_done", 0)
    state.setdefault("indexes", {})
    state.setdefault(
        "header",
        run_header(parameters=parameters)
        | {"estimate": {k: round(v, 2) for k, v in needs.items()}, "disk_free_gb_at_start": round(free_gb, 1), "ram_available_gb_at_start": round(ram_gb, 1)},
    )
    manifest_repo = args.data / "repo-int8"
    if not (manifest_repo / "manifest.json").is_file():
        from bench.run import ensure_repo

        ensure_repo(manifest_repo, "int8")
    stamp = ModelStamp.of(Manifest.read(manifest_repo))
    if stamp.dimension != args.dim:
        sys.exit(f"bench.scale: the model repository's dimension is {stamp.dimension}, not --dim {args.dim}")
    milvus, ports = start_patched(work / "milvus", (work / "milvus" / "mmap") if args.mmap else None, args.segment_mb)
    uri = local_uri(ports, work / "milvus")
    index = ImageIndex(uri, ALIAS, stamp, timeout_s=600)
    try:
        client: Any = index._connect()  # the real pymilvus client: index types and loads are outside the port ImageIndex uses
        if "collection" not in state:
            collection = index.new_collection()
            client.release_collection(collection, timeout=600)
            for name in client.list_indexes(collection):
                client.drop_index(collection, name, timeout=600)  # no index while rows arrive; each type is built on the sealed segments
            index.swap_alias(collection)
            state["collection"] = collection
            save_state(work, state)
        if state["batches_done"] < len(batch_sizes(args.size, args.batch)):
            ingest(args, work, state, index, client)
        if "flush_s" not in state:
            started = time.perf_counter()
            client.flush(state["collection"], timeout=3600)
            state["flush_s"] = round(time.perf_counter() - started, 1)
            state["rows"] = int(client.get_collection_stats(state["collection"], timeout=600)["row_count"])
            state["disk_after_ingest_mb"] = round(disk_mb(work / "milvus"), 0)
            state["rss_after_ingest_mb"] = round(family_rss_mb(milvus.pid or 0), 0)
            save_state(work, state)
            log(
                f"ingest: {state['rows']:,} rows, {args.size / state['ingest_s']:,.0f} vec/s; flush {state['flush_s']} s; disk {state['disk_after_ingest_mb']:,.0f} MiB"
            )
        for kind in args.indexes:
            if kind in state["indexes"]:
                continue
            try:
                result = measure_index(args, work, kind, state, index, client, milvus)
            except BuildFailed as exc:
                log(f"{kind}: {exc}")
                state["indexes"][kind] = {"index_params": index_params(kind, args.nlist, args.pq_m), "error": str(exc)}
                save_state(work, state)
                continue
            if not args.no_gateway:
                try:
                    result["gateway"] = gateway_latency(args, work, uri, milvus)
                except Exception as exc:  # noqa: BLE001 - the index's own figures are kept; the failure is recorded and said
                    log(f"{kind}: the gateway run failed: {exc!r}")
                    result["gateway_error"] = repr(exc)[:500]
                    state["indexes"][kind] = result
                    save_state(work, state)
                    continue
                log(f"{kind}: gateway SearchText p50 {result['gateway']['c1']['p50_ms']:.1f} ms c=1, p99 {result['gateway']['c16']['p99_ms']:.1f} ms c=16")
            state["indexes"][kind] = result
            save_state(work, state)
    finally:
        index.close()
        milvus.stop(timeout_s=30)
    return report_of(args, state)


def report_of(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    ingest_rate = args.size / state["ingest_s"]
    report = {
        **state["header"],
        "size": args.size,
        "dim": args.dim,
        "rows": state["rows"],
        "ingest": {
            "seconds": round(state["ingest_s"], 1),
            "vectors_per_s": round(ingest_rate, 0),
            "flush_s": state["flush_s"],
            "disk_mb": state["disk_after_ingest_mb"],
            "rss_mb": state["rss_after_ingest_mb"],
        },
        "indexes": state["indexes"],
    }
    report["extrapolation_10m"] = extrapolate(report, 10_000_000)
    return report


def extrapolate(report: dict[str, Any], target: int) -> dict[str, Any]:
    """Linear in the number of vectors (ingest, build, disk, RAM above the idle server): the arithmetic, shown."""
    factor = target / report["size"]
    out: dict[str, Any] = {
        "factor": factor,
        "ingest_h": round(report["ingest"]["seconds"] * factor / 3600, 2),
        "formula": f"figure at {report['size']:,} x {factor:g}; RAM: idle server + (loaded RSS - idle) x {factor:g}",
    }
    idle = report["ingest"]["rss_mb"]
    for kind, result in report["indexes"].items():
        if "error" in result:
            continue
        out[kind] = {
            "build_h": round(result["build_s"] * factor / 3600, 2),
            "disk_gb": round(result["disk_mb"] * factor * 2**20 / 1e9, 1),
            "rss_loaded_gb": round((idle + max(0.0, result["rss_loaded_mb"] - result["rss_before_load_mb"]) * factor) * 2**20 / 1e9, 1),
        }
    return out


# --- the table --------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    size = report["size"]
    ingest = report["ingest"]
    p = report["parameters"]
    lines = [
        f"{measured(report)}. **{size:,} vectors** (clustered, {report['dim']}-d, {p['clusters']} clusters), "
        f"{p['queries']:,} queries, exact top-{K} streamed with numpy. Raw data: `{report['path']}`.",
        "",
        f"Ingest: {ingest['vectors_per_s']:,.0f} vectors/s ({ingest['seconds']:.0f} s, batches of {p['batch']:,}, inserts of {p['insert_rows']:,} rows), "
        f"flush {ingest['flush_s']:.0f} s; {ingest['disk_mb']:,.0f} MiB on disk, Milvus RSS {ingest['rss_mb']:,.0f} MiB (nothing loaded).",
        "",
        "| index | build | load | Milvus RSS loaded | disk | search value | recall@10 | Milvus p50 c=1 | Milvus p99 c=16 | Milvus queries/s c=16 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, result in report["indexes"].items():
        if "error" in result:
            lines.append(f"| {kind} | failed: {result['error']} | | | | | | | | |")
            continue
        first = True
        for value, figures in result["values"].items():
            head = (
                f"| {kind} {json.dumps(result['index_params']) if result['index_params'] else ''} | {result['build_s']:.0f} s | {result['load_s']:.0f} s | "
                f"{result['rss_loaded_mb']:,.0f} MiB | {result['disk_mb']:,.0f} MiB"
                if first
                else "| | | | |"
            )
            first = False
            m = figures["milvus"]
            lines.append(
                f"{head} | {result['search_key']}={value} | {figures['recall_at_10']:.3f} | {m['c1']['p50_ms']:.1f} ms | {m['c16']['p99_ms']:.1f} ms | {m['c16']['qps']:.0f} |"
            )
    gateways = [(kind, result) for kind, result in report["indexes"].items() if "gateway" in result]
    if gateways:
        lines += [
            "",
            "SearchText through the gateway (int8 text tower on Triton, unique queries). The gateway sends Milvus its HNSW `ef` only, "
            "so these searches run at Milvus's default for the index (its recall measured with the gateway's own call):",
            "",
            "| index | same results as | recall@10 there | p50 c=1 | p99 c=1 | p50 c=16 | p99 c=16 | queries/s c=16 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for kind, result in gateways:
            g = result["gateway"]
            lines.append(
                f"| {kind} | {', '.join(result['search_key'] + '=' + v for v in result['gateway_params']['same_results_as']) or 'its default'} | {result['gateway_params']['recall_at_10']:.3f} | {g['c1']['p50_ms']:.1f} ms | "
                f"{g['c1']['p99_ms']:.1f} ms | {g['c16']['p50_ms']:.1f} ms | {g['c16']['p99_ms']:.1f} ms | {g['c16']['qps']:.0f} |"
            )
    for kind, result in report["indexes"].items():
        if "gateway_error" in result:
            lines += ["", f"The gateway run on {kind} failed: `{result['gateway_error']}`."]
    x = report["extrapolation_10m"]
    if x["factor"] != 1:
        lines += [
            "",
            f"10M by arithmetic (not measured; {x['formula']}): ingest {x['ingest_h']:.2f} h; "
            + "; ".join(
                f"{kind} build {v['build_h']:.2f} h, {v['disk_gb']:.1f} GB on disk, about {v['rss_loaded_gb']:.1f} GB RSS loaded"
                for kind, v in x.items()
                if isinstance(v, dict)
            )
            + ".",
        ]
    return "\n".join(lines)


def parse_values(text: str) -> dict[str, list[int]]:
    """``IVF_SQ8=8,16,32;DISKANN=16,64`` as a dict."""
    out = {}
    for part in filter(None, text.split(";")):
        kind, _, values = part.partition("=")
        out[kind.strip().upper()] = [int(v) for v in values.split(",")]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10_000_000, help="vectors to load")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=50_000, help="vectors made, inserted and scored per batch")
    parser.add_argument("--insert-rows", type=int, default=5_000, help="rows per insert call")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--indexes", default="IVF_SQ8,IVF_PQ", help=f"comma-separated, two to compare: {', '.join(SEARCH_VALUES)}")
    parser.add_argument("--values", type=parse_values, default={}, help="search values per index, e.g. 'IVF_SQ8=8,16,32;DISKANN=16,64'")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--pq-m", type=int, default=64)
    parser.add_argument("--segment-mb", type=int, default=512, help="Milvus's dataCoord.segment.maxSize (512 as shipped)")
    parser.add_argument("--mmap", action="store_true", help="queryNode.mmapDirPath under the data folder (Milvus 2.3 maps the loaded field data)")
    parser.add_argument("--requests", type=int, default=100, help="requests at c=1 per search value (c=16 sends 3x, through the gateway 5x)")
    parser.add_argument("--build-timeout", type=float, default=6 * 3600)
    parser.add_argument("--no-gateway", action="store_true", help="direct Milvus latency only")
    parser.add_argument("--fresh", action="store_true", help="discard a stopped run's state and data")
    parser.add_argument("--no-publish", action="store_true", help="write the JSON only, not docs/benchmarks.md")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    args.indexes = [kind.strip().upper() for kind in args.indexes.split(",")]
    unknown = [kind for kind in args.indexes if kind not in SEARCH_VALUES]
    if unknown:
        parser.error(f"unknown index types {unknown}; choose from {list(SEARCH_VALUES)}")
    from core.logs import configure_logging

    configure_logging("WARNING")
    report = run(args)
    if args.no_publish:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{report['date']}-{report['host']}-scale-{args.size}.json"
        report["path"] = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        path.write_text(json.dumps(report, indent=2))
        print(render(report))
    else:
        path = publish(report, args.out, f"-scale-{args.size}", START, END, render)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
