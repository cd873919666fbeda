"""``make bench-gateway``: the gateway's CPU per SearchText query at 16 clients, against a baseline gateway in the same run, and where it goes.

Starts Milvus (``--size`` clustered vectors, sealed), one Triton (int8 random ViT-B/32) and, in
turn, a gateway of this checkout and one of ``--baseline REV`` (that commit's gateway, core,
search and inference packages, unpacked with ``git archive``), alternating ``--rounds`` times so
drift on the shared cores falls on both. Each round sends SearchText at concurrency 16 with
unique queries (each encoded by Triton) and with one repeated query (the embedding cache
answers); CPU seconds come from ``/proc`` for each process tree (``bench.procs``), and by thread
name for the gateway. With ``--profile DIR`` it also records the current gateway with py-spy
during a unique-query load: a flame graph (SVG), a speedscope file and the top functions by
on-CPU samples. Writes ``bench/results/<date>-<host>-gateway-cpu.json`` and the table between the
``gateway-cpu`` markers of ``docs/benchmarks.md`` (``--no-publish``: neither). Nothing here is a
test assertion.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from bench.data import clustered_vectors
from bench.grpc_floor import floor
from bench.load import run_load
from bench.procs import cpu_seconds, wait_for_quiet
from bench.queries import distinct_queries
from bench.report import ROOT, measured, publish, run_header
from bench.run import Gateway, ensure_repo, fill_collection, log
from core.index import ImageIndex
from core.logs import configure_logging
from core.manifest import Manifest
from core.records import HnswParams, ModelStamp
from devstack.milvus import local_uri, start_milvus
from devstack.triton import start_triton
from t2i.client import GatewayClient

START, END = "<!-- gateway-cpu:start -->", "<!-- gateway-cpu:end -->"
PACKAGES = ("gateway", "core", "search", "inference")  # what a baseline gateway runs from its own commit (the protos and t2i stay this checkout's)
CONCURRENCY = 16
REPEATED = "a photo of a repeated query"


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid``'s live threads, summed by thread name (``grpc_global_tim``, ``milvus_0``...: digits dropped)."""
    tick = os.sysconf("SC_CLK_TCK")
    by_name: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            head, _, rest = (task / "stat").read_text().rpartition(")")
        except OSError:
            continue
        fields = rest.split()
        name = head.partition("(")[2].rstrip("0123456789_-") or "?"
        by_name[name] += (int(fields[11]) + int(fields[12])) / tick
    return dict(by_name)


def baseline_tree(rev: str, target: Path) -> Path:
    """The gateway's packages at ``rev`` unpacked under ``target`` (replaced if there)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", rev, *PACKAGES], cwd=ROOT, capture_output=True, check=True).stdout
    tar = target / "tree.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as opened:
        opened.extractall(target, filter="data")
    tar.unlink()
    return target


def snapshot_tree(target: Path) -> Path:
    """This checkout's gateway packages copied under ``target``, so that edits made while the benchmark runs do not reach its later gateways."""
    shutil.rmtree(target, ignore_errors=True)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def source_env(tree: Path | None) -> dict[str, str]:
    """The environment that runs a gateway from ``tree`` instead of this checkout (None: this checkout)."""
    if tree is None:
        return {}
    # PYTHONSAFEPATH: ``-m`` would put the working directory (this checkout) first on sys.path, before PYTHONPATH.
    return {"PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"}


def loaded(client: GatewayClient, texts: list[str], pids: dict[str, int], gateway_pid: int) -> dict[str, Any]:
    """SearchText of each of ``texts`` at concurrency 16: latency, queries/s, CPU ms per query by process and by gateway thread."""
    own = os.getpid()  # the servers are this process's children: count the load client alone
    before = {name: cpu_seconds(pid, pid != own) for name, pid in pids.items()}
    threads_before = thread_cpu(gateway_pid)
    load = run_load(functools.partial(send, client, texts), CONCURRENCY, len(texts), 120).as_dict()
    done = max(1, load["requests"])
    cpu = {name: (cpu_seconds(pid, pid != own) - before[name]) * 1000 / done for name, pid in pids.items()}
    threads = {name: (seconds - threads_before.get(name, 0.0)) * 1000 / done for name, seconds in thread_cpu(gateway_pid).items()}
    return {
        "load": load,
        "cpu_ms_per_query": cpu,
        "gateway_threads_ms_per_query": {k: round(v, 3) for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v > 0},
    }


def send(client: GatewayClient, texts: list[str], i: int) -> None:
    """One SearchText of ``texts[i]``."""
    client.search_text(texts[i], top_k=10)


def record_profile(pid: int, seconds: float, path: Path, fmt: str, native: bool) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` for ``seconds`` into ``path`` (``fmt``: flamegraph, speedscope or raw), started in the background."""
    spy = Path(sys.executable).with_name("py-spy")
    command = [str(spy), "record", "--pid", str(pid), "--rate", "250", "--duration", str(int(seconds)), "--format", fmt, "--output", str(path)]
    command += ["--native"] if native else ["--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def top_functions(raw: Path, count: int = 25) -> dict[str, Any]:
    """The functions with the most on-CPU samples in a py-spy ``raw`` (collapsed stacks) file: by self samples and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack:
            continue
        n = int(samples)
        frames = [
            frame.split(" (")[0] + " (" + frame.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")" if " (" in frame else frame for frame in stack.split(";")
        ]
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / max(1, total), 1)) for name, n in counter.most_common(count)]

    return {"samples": total, "self_percent": share(own), "inclusive_percent": share(inclusive)}


def profile(gateway: Gateway, client: GatewayClient, queries: list[str], out: Path, native: bool) -> dict[str, Any]:
    """Unique-query loads at c=16 while py-spy records the gateway: SVG flame graph, speedscope, and the top list from raw stacks."""
    out.mkdir(parents=True, exist_ok=True)
    pid = gateway.process.pid or 0
    result: dict[str, Any] = {"native": native}
    per_format = len(queries) // 3
    for number, (fmt, suffix) in enumerate((("flamegraph", "svg"), ("speedscope", "speedscope.json"), ("raw", "txt"))):
        texts = queries[number * per_format : (number + 1) * per_format]
        path = out / f"gateway-searchtext-c16.{suffix}"
        seconds = 20.0
        spy = record_profile(pid, seconds, path, fmt, native)
        time.sleep(1.0)  # py-spy attaches
        stop = time.monotonic() + seconds - 2
        sent = 0
        while time.monotonic() < stop and sent < len(texts):
            batch = texts[sent : sent + 64]
            run_load(functools.partial(send, client, batch), CONCURRENCY, len(batch), 60)
            sent += len(batch)
        _, err = spy.communicate(timeout=seconds + 60)
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode()[-500:]}")
        result[fmt] = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        result[f"{fmt}_queries"] = sent
    result["top"] = top_functions(out / "gateway-searchtext-c16.txt")
    return result


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds of each gateway's CPU ms per query (unique and cached), p99 and queries/s."""
    result: dict[str, Any] = {}
    for kind in ("unique", "cached"):
        values = [r[kind] for r in rounds]
        result[kind] = {
            "gateway_cpu_ms_per_query": statistics.median(v["cpu_ms_per_query"]["gateway"] for v in values),
            "triton_cpu_ms_per_query": statistics.median(v["cpu_ms_per_query"]["triton"] for v in values),
            "milvus_cpu_ms_per_query": statistics.median(v["cpu_ms_per_query"]["milvus"] for v in values),
            "p99_ms": statistics.median(v["load"]["p99_ms"] for v in values),
            "qps": statistics.median(v["load"]["qps"] for v in values),
        }
    return result


def render(report: dict[str, Any]) -> str:
    """The Markdown table: each gateway's CPU per query (median of the rounds), p99 and queries/s at c=16."""
    params = report["parameters"]
    lines = [
        f"{measured(report)}, {report['size']:,} vectors, int8 random ViT-B/32, SearchText at concurrency {CONCURRENCY}, "
        f"{params['requests']} requests a load, median of {params['rounds']} alternating rounds. Raw data: `{report['path']}`.",
        "",
        "| gateway | queries | gateway CPU ms/query | Triton CPU ms/query | Milvus CPU ms/query | p99 ms | queries/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, gateway in report["gateways"].items():
        for kind in ("unique", "cached"):
            s = gateway["summary"][kind]
            lines.append(
                f"| {name} | {kind} | {s['gateway_cpu_ms_per_query']:.2f} | {s['triton_cpu_ms_per_query']:.2f} | {s['milvus_cpu_ms_per_query']:.2f} | "
                f"{s['p99_ms']:.0f} | {s['qps']:.0f} |"
            )
    if "floor" in report:
        bare, layers = (report["floor"]["median_cpu_ms_per_query"][name] for name in ("bare", "interceptors"))
        lines += [
            "",
            f"The floor, in the same run (`bench.grpc_floor`): a grpc.aio server answering the same SearchText response from a fake engine, "
            f"no Triton and no Milvus, costs {bare:.2f} ms of CPU per query bare and {layers:.2f} ms behind the gateway's four interceptors "
            f"(median of {len(report['floor']['rounds']['bare'])} alternating runs of {report['floor']['requests']} queries at c=16).",
        ]
    if "profile" in report:
        top = report["profile"]["top"]
        lines += [
            "",
            f"Where this checkout's gateway spends its samples under the unique-query load (py-spy, {top['samples']:,} on-CPU samples; "
            f"flame graph `{report['profile']['flamegraph']}`), the functions with the most samples of their own:",
            "",
            "| function (file) | own samples % |",
            "| --- | --- |",
            *(f"| `{name}` | {share:.1f} |" for name, share in top["self_percent"][:12]),
        ]
    if "conditions" in report:
        lines += ["", f"Conditions: {report['conditions']}."]
    return "\n".join(lines)


def measure_gateways(args: argparse.Namespace, repo: Path, trees: dict[str, Path | None], report: dict[str, Any], queries: list[str], needed: int) -> None:
    """Milvus with ``args.size`` vectors and one Triton; each gateway of ``trees`` in turn, ``args.rounds`` times; the profile in the last round."""
    manifest = Manifest.read(repo)
    shutil.rmtree(args.data / "milvus-gateway-cpu", ignore_errors=True)
    milvus, ports = start_milvus(args.data / "milvus-gateway-cpu")
    uri = local_uri(ports, args.data / "milvus-gateway-cpu")
    index = ImageIndex(uri, "gateway_cpu", ModelStamp.of(manifest), timeout_s=60, hnsw=HnswParams(16, 200, 64))
    offset = 0
    try:
        log(f"filling {args.size:,} vectors")
        fill_collection(index, clustered_vectors(args.size, manifest.dimension))
        log(f"Milvus quiet after {wait_for_quiet(milvus.pid or 0, 300):.0f} s")
        triton, tports = start_triton(repo, args.data / "triton-gateway-cpu")
        try:
            for number in range(args.rounds):
                for name, tree in trees.items():
                    gateway = Gateway(repo, f"127.0.0.1:{tports.grpc}", uri, "gateway_cpu", 64, args.data / "gateway-cpu.log", source_env(tree))
                    client = GatewayClient(gateway.address, timeout_s=60, token=gateway.token)
                    try:
                        pids = {"gateway": gateway.process.pid or 0, "triton": triton.pid or 0, "milvus": milvus.pid or 0, "load client": os.getpid()}
                        for i in range(8):  # warm-up: channels, the alias, the first encodes
                            client.search_text(f"warm up query number {i} of round {number}", top_k=10)
                        client.search_text(REPEATED, top_k=10)
                        log(f"round {number + 1}: {name}")
                        unique = loaded(client, queries[offset : offset + args.requests], pids, gateway.process.pid or 0)
                        offset += args.requests
                        cached = loaded(client, [REPEATED] * args.requests, pids, gateway.process.pid or 0)
                        report["gateways"][name]["rounds"].append({"unique": unique, "cached": cached})
                        log(
                            f"  unique {unique['cpu_ms_per_query']['gateway']:.2f} ms, cached {cached['cpu_ms_per_query']['gateway']:.2f} ms of gateway CPU a query"
                        )
                        if args.profile and name == "this checkout" and number == args.rounds - 1:
                            log(f"py-spy profile into {args.profile}")
                            report["profile"] = profile(gateway, client, queries[needed:], args.profile, args.native)
                    finally:
                        client.close()
                        gateway.stop()
        finally:
            triton.stop()
    finally:
        index.close()
        milvus.stop(timeout_s=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=20_000, help="vectors in the collection (default 20000: the gateway's cost does not grow with it)")
    parser.add_argument("--requests", type=int, default=480, help="requests per load (default 480)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each gateway (default 3)")
    parser.add_argument("--baseline", default="", help="a commit whose gateway runs beside this checkout's (default: none)")
    parser.add_argument("--profile", type=Path, default=None, help="record this checkout's gateway with py-spy into DIR (SVG, speedscope, top list)")
    parser.add_argument("--native", action="store_true", help="py-spy --native: C frames too (grpc, protobuf)")
    parser.add_argument("--no-publish", action="store_true", help="print the table; write neither the result file nor docs/benchmarks.md")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    configure_logging("WARNING")
    repo = ensure_repo(args.data / "repo-int8", "int8")
    trees: dict[str, Path | None] = {"this checkout": snapshot_tree(args.data / "gateway-current")}
    if args.baseline:
        commit = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        trees = {f"baseline {commit}": baseline_tree(commit, args.data / "gateway-baseline"), **trees}
    parameters = {"size": args.size, "requests": args.requests, "rounds": args.rounds, "baseline": args.baseline, "concurrency": CONCURRENCY, "towers": "int8"}
    report: dict[str, Any] = {**run_header(parameters=parameters), "size": args.size, "gateways": {name: {"rounds": []} for name in trees}}
    needed = args.rounds * len(trees) * args.requests + 64
    queries = distinct_queries(needed + (3 * 1000 if args.profile else 0))
    measure_gateways(args, repo, trees, report, queries, needed)
    for gateway in report["gateways"].values():
        gateway["summary"] = summary(gateway["rounds"])
    log("the grpc.aio floor: SearchText from a fake engine, bare and behind the gateway's interceptors")
    report["floor"] = floor(args.requests * 4, 2, args.data / "grpc-floor")
    (args.data / "gateway-cpu-last.json").write_text(json.dumps(report, indent=2))  # every run's figures, published or not
    if args.no_publish:
        report["path"] = "(not written)"
        print(render(report))
        if "profile" in report:
            for line in report["profile"]["top"]["self_percent"]:
                print(line)
        return
    path = publish(report, args.out, "-gateway-cpu", START, END, render)
    log(f"wrote {path}; updated docs/benchmarks.md")


if __name__ == "__main__":
    main()
