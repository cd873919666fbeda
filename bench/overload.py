"""Load shedding under overload: the shipped gateway (``T2I_MAX_IN_FLIGHT``) against the same gateway with no bound.

Starts Milvus and Triton on loopback (the random ViT-B/32, fp32: the shipped default) with a
collection of ``--size`` clustered vectors, and three gateways on them: the shipped one, one with
half its bound, and a baseline whose bound is out of reach (how the gateway behaved before: every
request queued). The knee is measured once, on the baseline: a closed-loop sweep of 1 to 32
clients, and the knee is the smallest swept concurrency whose throughput reaches 90% of the
sweep's highest (``knee``; its concurrency and its own throughput are recorded). Then, in
``--rounds`` rounds that alternate the gateways, ``4 ×`` the knee's concurrency and 256 clients
send SearchText back to back for ``--seconds``; a refused client waits the server's retry hint
(``grpc-retry-pushback-ms``) and sends again.
Reported: accepted p50/p99, refusals and their client-side latency, and recovery (the latency of
the first requests after the load stops). The gateway CPU of one refusal is measured apart: a
gateway with a bound of one request, whose slot a request holds while Triton is stopped
(SIGSTOP), gets ``--refusals`` requests, every one refused, and its CPU time is divided by them.
Writes bench/results/<date>-<host>-overload.json and the table between the markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np

from bench.data import clustered_vectors
from bench.load import run_load
from bench.procs import cpu_seconds, wait_for_quiet
from bench.queries import sentences
from bench.report import measured, publish, run_header
from bench.run import ROOT, Gateway, ensure_repo, fill_collection, log
from core.index import HnswParams, ImageIndex
from core.manifest import Manifest
from core.records import ModelStamp
from devstack.milvus import local_uri
from devstack.stack import LocalStack
from t2i.client import GatewayClient

START, END = "<!-- overload:start -->", "<!-- overload:end -->"
UNBOUNDED = 1_000_000


SWEEP_LEVELS = (1, 2, 4, 8, 16, 32)
KNEE_FRACTION = 0.9
KNEE_RULE = "the smallest swept concurrency whose throughput reaches 90% of the sweep's highest"


def knee(sweep: list[dict[str, float]]) -> dict[str, float]:
    """The knee of a closed-loop sweep (``KNEE_RULE``): its concurrency and its own throughput, and the sweep's peak.

    Raises:
        ValueError: an empty sweep.
    """
    if not sweep:
        raise ValueError("an empty sweep has no knee")
    peak = max(sweep, key=lambda level: level["qps"])
    first = next(level for level in sorted(sweep, key=lambda level: level["concurrency"]) if level["qps"] >= KNEE_FRACTION * peak["qps"])
    top = max(level["concurrency"] for level in sweep)
    return {
        "concurrency": int(first["concurrency"]),
        "qps": first["qps"],
        "peak_concurrency": int(peak["concurrency"]),
        "peak_qps": peak["qps"],
        "at_sweep_end": first["concurrency"] == top,  # throughput may still grow past the sweep
    }


def capacity_sweep(client: GatewayClient, queries: list[str], seconds: float) -> list[dict[str, float]]:
    """SearchText throughput and latency at each of ``SWEEP_LEVELS`` closed-loop clients, ``seconds`` each."""
    levels = []
    for concurrency in SWEEP_LEVELS:
        result = run_load(lambda i: client.search_text(queries[i % len(queries)], top_k=10), concurrency, 10**9, seconds).as_dict()
        levels.append(result)
        log(f"c={concurrency}: {result['qps']:.1f} q/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
    return levels


def refusal_cost(stack: LocalStack, repo: Path, uri: str, data: Path, refusals: int) -> dict[str, Any]:
    """Gateway CPU per refused request: a bound of 1, its slot held by a request waiting on a stopped Triton."""
    gateway = Gateway(repo, stack.triton_url, uri, "overload", 64, data / "gateway-refusals.log", {"T2I_MAX_IN_FLIGHT": "1", "T2I_TRITON_TIMEOUT_S": "120"})
    client = GatewayClient(gateway.address, timeout_s=120, token=gateway.token)
    triton = stack.triton.pid if stack.triton else 0
    holder: threading.Thread | None = None
    try:
        client.search_text("warm up", top_k=10)
        os.killpg(triton or 0, signal.SIGSTOP)

        def hold() -> None:
            with contextlib.suppress(grpc.RpcError):  # it ends when Triton is continued, or with UNAVAILABLE
                client.search_text("held while Triton is stopped", top_k=10)

        holder = threading.Thread(target=hold)
        holder.start()
        time.sleep(1.0)
        pid = gateway.process.pid or 0
        cpu_before, codes = cpu_seconds(pid, descendants=False), Counter[str]()

        def one(i: int) -> None:
            try:
                client.search_text(f"refused {i}", top_k=10)
                codes["OK"] += 1
            except grpc.RpcError as exc:
                codes[exc.code().name] += 1

        timing = run_load(one, 4, refusals, 120)
        cpu_ms = (cpu_seconds(pid, descendants=False) - cpu_before) * 1000
    finally:
        os.killpg(triton or 0, signal.SIGCONT)
        if holder is not None:
            holder.join(timeout=130)
        client.close()
        gateway.stop()
    return {
        "requests": refusals,
        "codes": dict(codes),
        "gateway_cpu_ms_per_refusal": cpu_ms / refusals,
        "client_p50_ms": timing.p50_ms,
        "client_p99_ms": timing.p99_ms,
    }


def overload(gateway: Gateway, queries: list[str], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` closed-loop clients for ``seconds``; refused clients wait the server's hint."""
    client = GatewayClient(gateway.address, timeout_s=30, token=gateway.token)
    accepted: list[float] = []
    refused: list[float] = []
    other: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(offset: int) -> None:
        i = offset
        while time.monotonic() < stop_at:
            i += clients
            start = time.perf_counter()
            try:
                client.search_text(queries[i % len(queries)], top_k=10)
                with lock:
                    accepted.append((time.perf_counter() - start) * 1000)
            except grpc.RpcError as exc:
                elapsed = (time.perf_counter() - start) * 1000
                code = exc.code()
                with lock:
                    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        refused.append(elapsed)
                    else:
                        other[code.name] = other.get(code.name, 0) + 1
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    trailing = cast(grpc.Call, exc).trailing_metadata() or ()  # a call's error is also a grpc.Call
                    hint = next((str(value) for key, value in trailing if key == "grpc-retry-pushback-ms"), "50")
                    time.sleep(int(hint) / 1000)

    wall = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall
    # Recovery: the first requests once the load has stopped.
    after = []
    for i in range(10):
        start = time.perf_counter()
        client.search_text(f"after the storm {i}", top_k=10)
        after.append((time.perf_counter() - start) * 1000)
    client.close()
    ok = np.asarray(accepted or [float("nan")])
    no = np.asarray(refused or [float("nan")])
    return {
        "clients": clients,
        "seconds": wall,
        "accepted": len(accepted),
        "accepted_qps": len(accepted) / wall,
        "accepted_p50_ms": float(np.percentile(ok, 50)),
        "accepted_p99_ms": float(np.percentile(ok, 99)),
        "refused": len(refused),
        "refused_p50_ms": float(np.percentile(no, 50)),
        "refused_p99_ms": float(np.percentile(no, 99)),
        "other_errors": other,
        "after_first_ms": after[0],
        "after_p50_ms": float(np.median(after)),
    }


def render(report: dict[str, Any]) -> str:
    """The Markdown table; the knee is computed from the recorded sweep by ``KNEE_RULE``."""
    found = knee(report["sweep"])
    lines = [
        f"{measured(report)}: SearchText over {report['size']:,} vectors, random ViT-B/32 fp32 on CPU Triton, "
        f"shipped bound T2I_MAX_IN_FLIGHT={report['max_in_flight']} ({report['path']}).",
        "",
        f"Sweep of the unbounded gateway ({report['seconds'] / 4:.0f} s a level): "
        + ", ".join(f"c={int(level['concurrency'])} {level['qps']:.0f} q/s p99 {level['p99_ms']:.0f} ms" for level in report["sweep"])
        + f". Knee ({KNEE_RULE}): **c={found['concurrency']}, {found['qps']:.0f} q/s** (peak {found['peak_qps']:.0f} q/s at c={found['peak_concurrency']})"
        + ("; it is the sweep's last level, so throughput may still grow past it." if found["at_sweep_end"] else "."),
    ]
    chosen = report.get("saturating_concurrency")
    if chosen is not None and chosen != found["concurrency"]:
        at_chosen = next(level["qps"] for level in report["sweep"] if level["concurrency"] == chosen)
        lines += [
            "",
            f"This run predates that rule: it took c={chosen} (the first doubling that added under 15%) as saturation, printed the sweep's "
            f"peak ({report['saturating_qps']:.0f} q/s) as its throughput where c={chosen} measured {at_chosen:.0f} q/s, and loaded "
            f'{4 * chosen} clients as "4×". By the rule, {4 * chosen} clients are {4 * chosen / found["concurrency"]:g}× the knee.',
        ]
    lines += [
        "",
        f"Each row: {report['rounds']} runs of {report['seconds']:.0f} s, alternated with the other gateways; q/s is their mean, latencies the worst of them, refusals their sum.",
        "",
        "| gateway | clients (× the knee) | answered q/s | answered p50 | answered p99 | refused (RESOURCE_EXHAUSTED) | refusal latency at the client p50 / p99 | other errors | first request after the load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in report["runs"].items():
        for clients in sorted({run["clients"] for run in runs}):
            same = [run for run in runs if run["clients"] == clients]
            refused = [run for run in same if run["refused"]]
            refusal = f"{max(r['refused_p50_ms'] for r in refused):.1f} / {max(r['refused_p99_ms'] for r in refused):.1f} ms" if refused else "–"
            lines.append(
                f"| {name} | {clients} ({clients / found['concurrency']:g}×) | {np.mean([r['accepted_qps'] for r in same]):.0f} | {max(r['accepted_p50_ms'] for r in same):.0f} ms | "
                f"{max(r['accepted_p99_ms'] for r in same):.0f} ms | {sum(r['refused'] for r in same)} | {refusal} | "
                f"{sum(sum(r['other_errors'].values()) for r in same)} | {max(r['after_first_ms'] for r in same):.0f} ms |"
            )
    cost = report["refusal_cost"]
    lines += [
        "",
        f"One refusal costs the gateway {cost['gateway_cpu_ms_per_refusal']:.2f} ms of CPU ({cost['requests']} requests to a gateway with its one slot held: "
        f"{', '.join(f'{k} {v}' for k, v in cost['codes'].items())}; {cost['client_p50_ms']:.1f} ms p50 and {cost['client_p99_ms']:.1f} ms p99 at the client).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--refusals", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="each gateway and load, alternated")
    parser.add_argument("--max-in-flight", type=int, default=None, help="the shipped bound (default: T2I_MAX_IN_FLIGHT's default)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    from core.settings import GatewaySettings

    bound = args.max_in_flight or GatewaySettings.model_fields["max_in_flight"].default
    repo = ensure_repo(args.data / "repo-fp32", "fp32")
    manifest = Manifest.read(repo)
    queries = sentences()
    parameters = {
        "size": args.size,
        "seconds": args.seconds,
        "sweep_levels": list(SWEEP_LEVELS),
        "sweep_seconds": args.seconds / 4,
        "knee_rule": KNEE_RULE,
        "loads": "4 × the knee's concurrency, and 256 clients",
        "rounds": args.rounds,
        "refusals": args.refusals,
        "max_in_flight": bound,
        "embedding_cache": 0,
    }
    report: dict[str, Any] = {
        **run_header(parameters=parameters),
        "size": args.size,
        "max_in_flight": bound,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "runs": {},
    }
    stack = LocalStack(repo, args.data / "overload", alias="overload")
    stack.start(gateway=False)
    try:
        assert stack.milvus_ports is not None
        uri = local_uri(stack.milvus_ports, stack.data_dir / "milvus")
        index = ImageIndex(uri, "overload", ModelStamp.of(manifest), timeout_s=60, hnsw=HnswParams(16, 200, 64))
        log(f"filling {args.size} vectors")
        fill_collection(index, clustered_vectors(args.size, manifest.dimension))
        index.close()
        milvus = stack.milvus.pid if stack.milvus else 0
        log(f"Milvus quiet after {wait_for_quiet(milvus or 0, 300):.0f} s (compaction and index builds after the bulk load)")
        bounds = {
            f"shipped (bound {bound})": bound,
            f"bound {max(1, bound // 2)}": max(1, bound // 2),
            "baseline (no bound: every request queues)": UNBOUNDED,
        }
        gateways = {
            name: Gateway(
                repo,
                stack.triton_url,
                uri,
                "overload",
                64,
                args.data / f"gateway-overload-{n}.log",
                {"T2I_MAX_IN_FLIGHT": str(limit), "T2I_EMBEDDING_CACHE_SIZE": "0"},
            )
            for n, (name, limit) in enumerate(bounds.items())
        }
        try:
            wait_for_quiet(milvus or 0, 120)
            baseline = gateways["baseline (no bound: every request queues)"]  # capacity, unaffected by shedding
            client = GatewayClient(baseline.address, timeout_s=30, token=baseline.token)
            for gateway in gateways.values():
                warm = GatewayClient(gateway.address, timeout_s=30, token=gateway.token)
                for i in range(10):
                    warm.search_text(f"warm up {i}", top_k=10)
                warm.close()
            sweep = capacity_sweep(client, queries, args.seconds / 4)
            client.close()
            report.update(sweep=sweep, knee=knee(sweep))
            concurrency = report["knee"]["concurrency"]
            log(f"knee at {concurrency} clients ({report['knee']['qps']:.1f} q/s)")
            # Rounds alternate the gateways, so that a slow spell of the machine does not favour one of them.
            for round_number in range(args.rounds):
                for clients in (4 * concurrency, 256):
                    for name, gateway in gateways.items():
                        log(f"round {round_number + 1}: {name}, {clients} clients for {args.seconds:.0f} s")
                        run = overload(gateway, queries, clients, args.seconds)
                        log(f"  {run}")
                        report["runs"].setdefault(name, []).append(run)
        finally:
            for gateway in gateways.values():
                gateway.stop()
        log(f"refusal cost: {args.refusals} requests at a full gateway")
        report["refusal_cost"] = refusal_cost(stack, repo, uri, args.data, args.refusals)
        log(f"  {report['refusal_cost']}")
    finally:
        stack.stop()
    publish(report, args.out, "-overload", START, END, render)


if __name__ == "__main__":
    main()
