"""The fault and abuse campaign (``make chaos``; a short version runs in ``make test``).

On a local stack of its own (the tiny random CLIP: this measures robustness, not speed) it runs
SearchText load from closed-loop clients at about 80% of the saturating concurrency and:

- injects faults, several times each: SIGKILL Triton (restarted after a pause), SIGSTOP Milvus
  (SIGCONT after ``--stop-s``), SIGKILL Milvus (restarted), SIGKILL the gateway (restarted). For
  each: the load's errors by status during the fault and in a window after recovery, the time to
  recover (first answer after the component is back), and whether the gateway process is still
  the same one (recovery without a restart);
- kills the reindex job at random moments while the folder changes, reruns it, and checks that
  the index holds exactly the folder: every id once, with the right content hash;
- sends bad input (``bench.abuse``): valid seed requests of every RPC, each first unmutated (every
  one must answer OK), then mutated: one field set to an odd value (huge and empty strings, odd
  Unicode, out-of-range integers, NaN, broken image bytes), and the raw bytes changed (bit flips,
  truncation, inserted bytes, invalid UTF-8); slow clients that open connections and never finish
  them; a flood of new connections.

It records the RSS of the gateway, Triton and Milvus before and after, writes
bench/results/<date>-<host>-chaos.json and the table between the markers of docs/reliability.md,
and fails (exit 1) when an invariant breaks: an INTERNAL or UNKNOWN status for client input, a
crash of a component that was not the one killed, a gateway restart needed to recover, or an
index that is not exact after a kill and its rerun, or a seed request that does not answer OK
unmutated. One exception, counted in the report: a rerun that ended well but after which Milvus
held rows of deleted files or a second row of an id (Milvus 2.3.5 brings back rows it had deleted
after a run has ended), when one more run makes the index exact.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from PIL import Image

from bench.abuse import connection_flood, fuzz, slow_clients
from bench.procs import rss_mb
from bench.report import ROOT, measured, replace_between, run_header
from core.index import ImageIndex
from core.manifest import Manifest
from core.records import ModelStamp, item_hash
from devstack.milvus import start_milvus
from devstack.process import signal_group
from devstack.sockets import descendants
from devstack.stack import LocalStack
from devstack.triton import start_triton
from export.main import run_export
from reindex.sources import Source
from t2i.client import GatewayClient
from text2image.v1 import text2image_pb2 as pb

START, END = "<!-- chaos:start -->", "<!-- chaos:end -->"
FORBIDDEN = {"INTERNAL", "UNKNOWN"}
QUERY_WORDS = ("red", "green", "blue", "dog", "cat", "car", "beach", "snow", "two", "small")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- load ------------------------------------------------------------------------------------------


@dataclass
class Load:
    """Closed-loop SearchText clients; every outcome is kept as (sent, answered, status name) on the monotonic clock."""

    client: GatewayClient
    clients: int
    outcomes: list[tuple[float, float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            query = " ".join(rng.choice(QUERY_WORDS) for _ in range(4)) + f" {rng.random():.6f}"  # new text: Triton is always asked
            sent = time.monotonic()
            try:
                self.client.search.SearchText(pb.SearchTextRequest(query=query, top_k=5), timeout=5)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
                time.sleep(0.05)  # a failing client backs off a little, as a real one would
            self.outcomes.append((sent, time.monotonic(), code))

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def codes(self, start: float, end: float) -> dict[str, int]:
        """Statuses of the requests sent between ``start`` and ``end``."""
        return dict(Counter(code for sent, _, code in list(self.outcomes) if start <= sent < end))

    def first_ok_after(self, moment: float, timeout_s: float) -> float | None:
        """When the first request sent after ``moment`` was answered OK (waiting up to ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answered = [done for sent, done, code in list(self.outcomes) if sent >= moment and code == "OK"]
            if answered:
                return min(answered)
            time.sleep(0.1)
        return None


# -- faults ----------------------------------------------------------------------------------------


def kill_triton(stack: LocalStack, pause_s: float) -> float:
    assert stack.triton is not None and stack.triton_ports is not None
    signal_group(stack.triton.pid, signal.SIGKILL)
    stack.triton.proc.wait()  # type: ignore[union-attr]
    time.sleep(pause_s)
    stack.triton, _ = start_triton(stack.repo, stack.data_dir / "triton", stack.triton_ports)
    return time.monotonic()


def stop_milvus(stack: LocalStack, pause_s: float) -> float:
    assert stack.milvus is not None
    signal_group(stack.milvus.pid, signal.SIGSTOP)
    time.sleep(pause_s)
    signal_group(stack.milvus.pid, signal.SIGCONT)
    return time.monotonic()


def kill_milvus(stack: LocalStack, pause_s: float) -> float:
    assert stack.milvus is not None and stack.milvus_ports is not None
    signal_group(stack.milvus.pid, signal.SIGKILL)
    stack.milvus.proc.wait()  # type: ignore[union-attr]
    time.sleep(pause_s)
    stack.milvus, _ = start_milvus(stack.data_dir / "milvus", stack.milvus_ports)
    return time.monotonic()


def kill_gateway(stack: LocalStack, pause_s: float) -> float:
    assert stack.gateway is not None
    signal_group(stack.gateway.pid, signal.SIGKILL)
    stack.gateway.proc.wait()  # type: ignore[union-attr]
    time.sleep(pause_s)
    stack.start_gateway()
    return time.monotonic()


FAULTS: dict[str, Callable[[LocalStack, float], float]] = {
    "Triton SIGKILL, restarted": kill_triton,
    "Milvus SIGSTOP, then SIGCONT": stop_milvus,
    "Milvus SIGKILL, restarted": kill_milvus,
    "gateway SIGKILL, restarted": kill_gateway,
}


def alive(stack: LocalStack) -> dict[str, bool]:
    return {p.name: p.alive() for p in (stack.milvus, stack.triton, stack.gateway) if p is not None}


def run_fault(stack: LocalStack, load: Load, name: str, pause_s: float, after_s: float) -> dict[str, Any]:
    """Inject one fault under load; errors during it and after recovery, recovery time, survivors."""
    gateway_pid = stack.gateway.pid if stack.gateway else None
    injected = time.monotonic()
    healed = FAULTS[name](stack, pause_s)
    recovered = load.first_ok_after(healed, 120)
    end = (recovered or time.monotonic()) + after_s
    time.sleep(max(0.0, end - time.monotonic()) + 6)  # the window's requests get their answers (or their 5 s deadline)
    same_gateway = stack.gateway is not None and stack.gateway.pid == gateway_pid
    return {
        "fault": name,
        "during": load.codes(injected, recovered or healed),
        "after": load.codes(recovered, end) if recovered else {},
        "recovery_s": None if recovered is None else recovered - healed,
        "gateway_restarted": not same_gateway,
        "alive": alive(stack),
    }


# -- reindex kills ---------------------------------------------------------------------------------


def write_image(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path, format="PNG")


def expected(folder: Path) -> dict[str, str]:
    source = Source(str(folder))
    return {image.id: item_hash(source.read(image, 1 << 30), image.uri, image.labels, image.modified_time) for image in source.list()}


def change_folder(folder: Path, rng: np.random.Generator, run: int) -> None:
    """Add two images, rewrite one, delete one: the folder moves between runs, as a real one does."""
    files = sorted(folder.rglob("*.png"))
    for n in range(2):
        write_image(folder / f"batch{run % 3}" / f"new_{run:03d}_{n}.png", rng)
    if files:
        write_image(files[int(rng.integers(len(files)))], rng)
        if len(files) > 4:
            files[int(rng.integers(len(files)))].unlink(missing_ok=True)


def reindex(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """An incremental ``t2i reindex`` of ``folder``, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "t2i.cli", "reindex", str(folder)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )


def compare(index: ImageIndex, want: dict[str, str], run: subprocess.CompletedProcess[str]) -> tuple[bool, int, dict[str, Any]]:
    """Whether the run ended well and the active collection holds exactly ``want`` (every id once, its hash); its row count; what differs."""
    collection = index.active()
    have = index.hashes(collection) if collection else {}
    count = index.count(collection) if collection else 0
    exact = run.returncode == 0 and have == want and count == len(want)
    detail = {
        "missing": sorted(set(want) - set(have))[:5],
        "extra": sorted(set(have) - set(want))[:5],
        "wrong_hash": sorted(key for key in want if key in have and have[key] != want[key])[:5],
        "duplicate_rows": count - len(have),
        "returncode": run.returncode,
        "stderr": run.stderr[-500:],
    }
    return exact, count, detail


def reindex_kills(stack: LocalStack, runs: int, folder: Path, seed: int) -> list[dict[str, Any]]:
    """Kill ``t2i reindex`` at random moments ``runs`` times, rerun it, and compare the index with the folder."""
    rng = np.random.default_rng(seed)
    env = {**os.environ, **stack.env()}
    index = ImageIndex(stack.milvus_uri, stack.alias, ModelStamp.of(Manifest.read(stack.repo)), timeout_s=30, token=stack.milvus_token)
    results: list[dict[str, Any]] = []
    try:
        for run in range(runs):
            change_folder(folder, rng, run)
            full = ["--full"] if run % 4 == 3 else []
            delay = float(rng.uniform(0.3, 4.0))
            log_path = stack.data_dir / f"reindex-{run}.log"
            with log_path.open("wb") as out:
                job = subprocess.Popen(
                    [sys.executable, "-m", "t2i.cli", "reindex", str(folder), *full], env=env, cwd=ROOT, stdout=out, stderr=out, start_new_session=True
                )
                try:
                    job.wait(timeout=delay)
                    killed = False
                except subprocess.TimeoutExpired:
                    signal_group(job.pid, signal.SIGKILL)
                    job.wait()
                    killed = True
            rerun = reindex(folder, env)
            want = expected(folder)
            exact, count, detail = compare(index, want, rerun)
            results.append(
                {"run": run, "full": bool(full), "killed_after_s": round(delay, 2) if killed else None, "files": len(want), "rows": count, "exact": exact}
            )
            how = f"killed after {delay:.1f} s" if killed else "finished before the kill"
            log(f"reindex run {run}: {how}, {len(want)} files, {count} rows, exact={exact}")
            if not exact:
                # The rerun verified its own deletes (reindex.job _verify) and still the index is off: Milvus 2.3.5 can
                # bring back rows it had deleted (one rerun in about 26 here). The next run must find and remove them.
                results[-1]["detail"] = detail
                exact_next, count_next, detail_next = compare(index, want, reindex(folder, env))
                results[-1]["next_run"] = {"exact": exact_next, "rows": count_next, **({} if exact_next else {"detail": detail_next})}
                log(f"  the next run: {count_next} rows, exact={exact_next}")
    finally:
        index.close()
    return results


# -- the campaign ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How much of each kind: ``short`` for make test, the defaults of ``main`` for make chaos."""

    rounds: int
    clients: int
    stop_s: float
    pause_s: float
    after_s: float
    reindex_runs: int
    fuzz_cases: int
    slow: int
    flood: int
    images: int


SHORT = Plan(rounds=1, clients=2, stop_s=3.0, pause_s=1.0, after_s=2.0, reindex_runs=3, fuzz_cases=120, slow=20, flood=50, images=12)
FULL = Plan(rounds=3, clients=3, stop_s=10.0, pause_s=2.0, after_s=5.0, reindex_runs=10, fuzz_cases=2000, slow=200, flood=500, images=40)


def rss(stack: LocalStack) -> dict[str, float]:
    """RSS of each server with its children (Milvus runs under its sandbox, Triton with its python-backend stubs)."""
    return {p.name: sum(rss_mb(pid) for pid in descendants(p.pid or 0)) for p in (stack.gateway, stack.triton, stack.milvus) if p is not None}


def violations(report: dict[str, Any]) -> list[str]:
    """Every broken invariant, one line each (empty: the campaign passed)."""
    found = []
    seeds = report["fuzz"].get("seeds", {})
    if not seeds.get("sent"):
        found.append("fuzz: no seed request was sent unmutated")
    found += [f"fuzz: seed {bad['seed']} of {bad['method']} answered {bad['code']} unmutated ({bad['detail']})" for bad in seeds.get("not_ok", [])]
    for name in ("fuzz", "flood"):
        if bad := FORBIDDEN & set(report[name]["codes"]):
            found.append(f"{name}: {sorted(bad)} for client input")
    for fault in report["faults"]:
        if bad := FORBIDDEN & (set(fault["during"]) | set(fault["after"])):
            found.append(f"{fault['fault']}: {sorted(bad)}")
        if fault["recovery_s"] is None:
            found.append(f"{fault['fault']}: no recovery within 120 s")
        if fault["gateway_restarted"] and not fault["fault"].startswith("gateway"):
            found.append(f"{fault['fault']}: the gateway had to be restarted")
        if not all(fault["alive"].values()):
            found.append(f"{fault['fault']}: a component died: {fault['alive']}")
        if set(fault["after"]) - {"OK"}:
            found.append(f"{fault['fault']}: errors after recovery: {fault['after']}")
    found += [
        f"reindex run {run['run']} is not exact: {run.get('detail')}; the next run: {run.get('next_run')}"
        for run in report["reindex"]
        if not run["exact"] and not (brought_back(run.get("detail")) and run.get("next_run", {}).get("exact"))
    ]
    if report["slow_clients"]["answered_meanwhile"] == 0:
        found.append("nothing was answered while slow clients held connections")
    return found


@contextlib.contextmanager
def campaign_stack(work: Path) -> Iterator[LocalStack]:
    repo = work / "model_repository"
    if not (repo / "manifest.json").is_file():
        run_export("tiny", repo)
    stack = LocalStack(repo, work / "stack", gateway_address="127.0.0.1:0", alias="chaos", extra_env={"T2I_HEALTH_INTERVAL_S": "0.5"})
    with stack:
        yield stack


def run_campaign(plan: Plan, work: Path, seed: int = 0) -> dict[str, Any]:
    """The whole campaign on a fresh stack under ``work``; returns the report (with ``violations``)."""
    shutil.rmtree(work / "stack", ignore_errors=True)
    report: dict[str, Any] = {**run_header(parameters={"plan": plan.__dict__, "seed": seed, "model": "tiny random CLIP"}), "plan": plan.__dict__, "faults": []}
    with campaign_stack(work) as stack:
        folder = work / "photos"
        shutil.rmtree(folder, ignore_errors=True)
        rng = np.random.default_rng(seed)
        for n in range(plan.images):
            write_image(folder / f"batch{n % 3}" / f"img_{n:03d}.png", rng)
        assert (
            subprocess.run([sys.executable, "-m", "t2i.cli", "reindex", str(folder)], env={**os.environ, **stack.env()}, cwd=ROOT, check=False).returncode == 0
        )
        report["rss_before_mb"] = rss(stack)
        client = GatewayClient(stack.gateway_address, timeout_s=10, token=stack.token("write"))
        with Load(client, plan.clients) as load:
            time.sleep(2)
            for round_number in range(plan.rounds):
                for name in FAULTS:
                    log(f"round {round_number + 1}: {name}")
                    pause = plan.stop_s if name.startswith("Milvus SIGSTOP") else plan.pause_s
                    report["faults"].append(run_fault(stack, load, name, pause, plan.after_s))
                    log(f"  {report['faults'][-1]}")
        report["load"] = {"clients": plan.clients, "requests": len(load.outcomes), "codes": dict(Counter(code for _, _, code in load.outcomes))}
        log("reindex kills")
        report["reindex"] = reindex_kills(stack, plan.reindex_runs, folder, seed)
        log("fuzz")
        report["fuzz"] = fuzz(stack.gateway_address, stack.token("write"), plan.fuzz_cases, seed)
        log(f"  {report['fuzz']['codes']}")

        def probe() -> bool:
            try:
                client.info()
                return True
            except grpc.RpcError:
                return False

        report["slow_clients"] = slow_clients(stack.gateway_address, plan.slow, 3.0, probe)
        report["flood"] = connection_flood(stack.gateway_address, stack.token("read"), plan.flood)
        report["rss_after_mb"] = rss(stack)
        report["alive_at_end"] = alive(stack)
        client.close()
    report["violations"] = violations(report)
    return report


def render(report: dict[str, Any]) -> str:
    """The Markdown tables of docs/reliability.md."""
    plan = report["plan"]
    lines = [
        f"{measured(report)}; {plan['rounds']} round(s) of each fault under "
        f"{report['load']['clients']} closed-loop SearchText clients ({report['load']['requests']} requests in all), Milvus stopped for {plan['stop_s']:.0f} s, "
        f"components restarted {plan['pause_s']:.0f} s after a kill.",
        "",
        "| fault | statuses during the fault | statuses after recovery | recovery after the component is back | gateway restarted |",
        "| --- | --- | --- | --- | --- |",
    ]
    for fault in report["faults"]:
        recovery = "none" if fault["recovery_s"] is None else f"{fault['recovery_s']:.1f} s"
        lines.append(
            f"| {fault['fault']} | {_codes(fault['during'])} | {_codes(fault['after'])} | {recovery} | {'yes (it was the one killed)' if fault['gateway_restarted'] else 'no'} |"
        )
    kills = report["reindex"]
    killed = [run for run in kills if run["killed_after_s"] is not None]
    lines += [
        "",
        f"Reindex: {len(kills)} runs, {len(killed)} killed mid-run (SIGKILL after 0.3–4 s) and rerun while the folder changed; "
        f"exact index (every file once, right hash) after {sum(run['exact'] for run in kills)} of {len(kills)}" + _brought_back(kills) + ".",
        "",
        "| bad input | cases | statuses |",
        "| --- | --- | --- |",
        *_fuzz_rows(report["fuzz"]),
        f"| slow clients holding half-open connections | {report['slow_clients']['connections']} | {report['slow_clients']['answered_meanwhile']} "
        f"GetIndexInfo calls answered during {report['slow_clients']['held_s']:.0f} s |",
        f"| a flood of new connections | {report['flood']['connections']} | {_codes(report['flood']['codes'])} |",
        "",
        "RSS (MB) before → after: "
        + ", ".join(f"{name} {report['rss_before_mb'][name]:.0f} → {report['rss_after_mb'].get(name, 0):.0f}" for name in report["rss_before_mb"])
        + ".",
        "",
        f"Invariants broken: {', '.join(report['violations']) or 'none'}.",
    ]
    return "\n".join(lines)


def brought_back(detail: dict[str, Any] | None) -> bool:
    """Whether a run that ended off is what Milvus 2.3.5 was seen to do after a run: only rows of deleted files or second
    rows of an id, the run itself ending well (a missing row, an old hash or a failed run is the job's fault)."""
    if not detail:
        return False
    return detail["returncode"] == 0 and not detail["missing"] and not detail["wrong_hash"] and bool(detail["extra"] or detail["duplicate_rows"] > 0)


def _brought_back(kills: list[dict[str, Any]]) -> str:
    """What the runs that ended off held, and whether the next run mended them (empty when every run was exact)."""
    off = [run for run in kills if not run["exact"] and "detail" in run]
    if not off:
        return ""
    details = [run["detail"] for run in off]
    held = ", ".join(
        f"{sum(len(d[key]) if isinstance(d[key], list) else max(0, d[key]) for d in details)} {label}"
        for key, label in (("extra", "rows of deleted files"), ("duplicate_rows", "second rows of an id"), ("missing", "missing"), ("wrong_hash", "old hashes"))
    )
    mended = sum(bool(run.get("next_run", {}).get("exact")) for run in off)
    return f"; the other {len(off)} held {held}, and the next run made it exact in {mended} of {len(off)}"


def _fuzz_rows(fuzz: dict[str, Any]) -> list[str]:
    if "seeds" not in fuzz:  # a campaign before the seeds were valid requests
        return [
            f"| mutated requests of every RPC (raw bytes), from seeds that were mostly invalid before mutation (legacy run) | {fuzz['cases']} | "
            f"{_codes(fuzz['codes'])} |"
        ]
    seeds = fuzz["seeds"]
    rows = [f"| valid seed requests of every RPC, unmutated (each must answer OK) | {seeds['sent']} | {_codes(seeds['codes'])} |"]
    rows += [f"| seeds mutated: {kind} | {sum(codes.values())} | {_codes(codes)} |" for kind, codes in sorted(fuzz["by_kind"].items())]
    return rows


def _codes(codes: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(codes.items(), key=lambda item: -item[1])) or "–"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the short campaign of make test (a few cases of each kind)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "chaos")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    report = run_campaign(SHORT if args.short else FULL, args.work, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{report['date']}-{report['host']}-chaos{'-short' if args.short else ''}.json"
    path.write_text(json.dumps(report, indent=2))
    text = render(report)
    if not args.short:
        replace_between(ROOT / "docs" / "reliability.md", START, END, text)
    print(text)
    print(f"report: {path}")
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
