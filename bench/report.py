"""Ratios, plots and the docs table for a ``bench.run`` report."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cpu import cpu_lines
from core.manifest import INT8_FLAGS, cpu_flags

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
ROOT = Path(__file__).resolve().parent.parent


def simd_flags() -> list[str]:
    """The CPU's vector extensions that matter for GEMM: int8 only beats fp32 with VNNI (or AMX)."""
    flags = cpu_flags()
    return [flag for flag in ("avx2", "fma", "avx512f", *INT8_FLAGS) if flag in flags]


def describe_flags(flags: list[str]) -> str:
    """``simd_flags`` for a sentence: "avx2, fma; no VNNI/AMX"."""
    return ", ".join(flags) + ("" if any("vnni" in f or "amx" in f for f in flags) else "; no VNNI/AMX")


PROVENANCE = ("commit", "dirty", "cpu_model", "cpu_flags", "parameters")
"""What every result file records besides its figures (``run_header``); a file without one of them carries a ``legacy`` note."""


def provenance_gaps(report: dict[str, Any]) -> list[str]:
    """The provenance fields ``report`` lacks (an empty list for a file written by ``run_header``)."""
    return [name for name in PROVENANCE if name not in report]


def parameters_of(report: dict[str, Any]) -> dict[str, Any]:
    """The parameters that shaped the numbers: recorded, or for a legacy file those derived afterwards (its ``legacy`` note says how)."""
    return report.get("parameters") or report.get("legacy", {}).get("derived_parameters", {})


GAP_NAMES = {"commit": "commit", "dirty": "dirty flag", "cpu_model": "CPU model", "cpu_flags": "CPU flags", "parameters": "parameters"}


def measured(report: dict[str, Any]) -> str:
    """The opening of a results paragraph: "Measured <date> on <machine> (<CPU model>; <CPU flags>), commit <commit>".

    What the file does not record is said, not guessed: a legacy file's line names the missing
    fields and the commit that added the file, and calls its figures not reproducible here.
    """
    cpu = [text for text in (report.get("cpu_model"), describe_flags(report["cpu_flags"]) if "cpu_flags" in report else None) if text]
    line = f"Measured {report['date']} on {report['machine']}" + (f" ({'; '.join(cpu)})" if cpu else "")
    if "commit" in report:
        line += f", commit {report['commit']}"
    if report.get("dirty"):
        line += f" with uncommitted changes ({len(report.get('changed_files', []))} tracked files)"
    if gaps := provenance_gaps(report):
        names = [GAP_NAMES[gap] for gap in gaps]
        legacy = report.get("legacy", {})
        line += (
            f" [legacy record: no {', '.join(names[:-1]) + ' or ' + names[-1] if len(names) > 1 else names[0]} recorded"
            + (f"; committed in {legacy['committed_in']}" if "committed_in" in legacy else "")
            + "; not reproducible here]"
        )
    return line


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("AMD EPYC 7B13"), or what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_state() -> tuple[str, bool | None, list[str]]:
    """The checkout's short commit, whether tracked files differ from it (None when git cannot say) and which."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False)

    commit, status = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    return commit.stdout.strip() or "unknown", bool(changed) if status.returncode == 0 else None, changed


def run_header(accelerator: str = "no GPU", parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every benchmark report starts with: when, where (machine, CPU model and flags), what code (commit, dirty) and how (``parameters``).

    ``parameters`` are every setting that shapes the numbers (mode and overrides, levels, seconds,
    sizes, image counts). The load average at the start and ``T2I_BENCH_CONDITIONS`` (free text:
    "other agents shared the 2 cores") say what else ran.
    """
    commit, dirty, changed = git_state()
    header = {
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.node(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {accelerator}",
        "cpu_model": cpu_model(),
        "cpu_flags": simd_flags(),
        "commit": commit,
        "dirty": dirty,
        "changed_files": changed,
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "parameters": parameters or {},
    }
    if conditions := os.environ.get("T2I_BENCH_CONDITIONS"):
        header["conditions"] = conditions
    return header


def _at(levels: list[dict[str, float]], concurrency: int) -> dict[str, float]:
    return next(level for level in levels if level["concurrency"] == concurrency)


def add_ratios(report: dict[str, Any]) -> None:
    """``ratios``: baseline divided by ours for latency, ours divided by baseline for throughput."""
    ratios: dict[str, Any] = {}
    for size, runs in report["search"].items():
        base = runs.get("baseline")
        if not base:
            continue
        for name, ours in runs.items():
            if name == "baseline":
                continue
            for level in ours["unique"]:
                c = level["concurrency"]
                theirs = _at(base["unique"], c)
                ratios[f"{size}/{name}/c{c}/p50_speedup"] = theirs["p50_ms"] / level["p50_ms"]
                ratios[f"{size}/{name}/c{c}/qps_ratio"] = level["qps"] / theirs["qps"] if theirs["qps"] else float("inf")
    reindex = report.get("reindex", {})
    for precision in ("fp32", "int8"):
        if f"ours_{precision}_img_per_s" in reindex and reindex.get("baseline_img_per_s"):
            ratios[f"reindex/{precision}_over_baseline"] = reindex[f"ours_{precision}_img_per_s"] / reindex["baseline_img_per_s"]
        if f"ours_{precision}_pipeline_img_per_s" in reindex and reindex.get("baseline_img_per_s"):
            ratios[f"reindex/{precision}_pipeline_over_baseline"] = reindex[f"ours_{precision}_pipeline_img_per_s"] / reindex["baseline_img_per_s"]
    report["ratios"] = ratios


def write_plots(report: dict[str, Any], out: Path, stem: str) -> list[Path]:
    """Latency against concurrency, encoder throughput against batch, p50 against index size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    sizes = list(report["search"])
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=False):
        for name, runs in report["search"][size].items():
            levels = runs["unique"]
            xs = [level["concurrency"] for level in levels]
            ax.plot(xs, [level["p50_ms"] for level in levels], marker="o", label=f"{name} p50")
            ax.plot(xs, [level["p99_ms"] for level in levels], linestyle="--", label=f"{name} p99")
        ax.set(xscale="log", yscale="log", xlabel="client concurrency", ylabel="SearchText latency (ms)", title=f"{int(size):,} vectors")
        ax.legend(fontsize=7)
    paths.append(out / f"{stem}-latency.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, kind, unit in ((axes[0], "text", "texts/s"), (axes[1], "image", "images/s")):
        for precision, result in report["encoder"].items():
            for c in sorted({r["concurrency"] for r in result[kind]}):
                rows = [r for r in result[kind] if r["concurrency"] == c]
                ax.plot([r["batch"] for r in rows], [r["per_s"] for r in rows], marker="o", label=f"{precision}, {c} in flight")
        ax.set(xscale="log", xlabel="batch size", ylabel=unit, title=f"{kind} tower through Triton")
        ax.legend(fontsize=7)
    paths.append(out / f"{stem}-encoder.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    names = {name for runs in report["search"].values() for name in runs}
    for name in sorted(names):
        xs = [int(s) for s in sizes if name in report["search"][s]]
        ax.plot(xs, [_at(report["search"][str(x)][name]["unique"], 1)["p50_ms"] for x in xs], marker="o", label=name)
    ax.set(xscale="log", xlabel="indexed vectors", ylabel="p50 at concurrency 1 (ms)", title="scaling with index size")
    ax.legend(fontsize=7)
    paths.append(out / f"{stem}-scaling.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close("all")
    return paths


def describe_run(report: dict[str, Any]) -> str:
    """How a ``bench.run`` report was run: its mode, what overrode the mode's defaults, and the load levels."""
    params = parameters_of(report)
    parts = [f"mode `{params.get('mode', report.get('mode'))}`"]
    if overrides := params.get("overrides"):
        parts.append("overridden: " + ", ".join(f"`--{name.replace('_', '-')}` {value}" for name, value in overrides.items()))
    if levels := params.get("requests_per_level"):
        parts.append("load levels " + ", ".join(f"c={c} {n} requests" for c, n in levels.items()) + f", each capped at {params['level_seconds_cap']:.0f} s")
    if "images" in params:
        parts.append(f"{params['images']} JPEGs reindexed ({params['baseline_images']} by the baseline)")
    return "; ".join(parts)


def markdown(report: dict[str, Any]) -> str:
    """The generated section of ``docs/benchmarks.md``."""
    lines = [
        f"{measured(report)}. {describe_run(report)[0].upper()}{describe_run(report)[1:]}. Model: {report['model']}. Raw data: `{report['path']}`.",
        "",
        "SearchText end to end (gRPC client → gateway → Triton → Milvus, unique queries: none sent twice to one server; "
        "baseline: FastAPI + PyTorch + one Milvus query):",
        "",
        "| vectors | stack | c | p50 ms | p95 ms | p99 ms | qps | p50 speed-up vs baseline |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, runs in report["search"].items():
        for name, result in runs.items():
            for level in result["unique"]:
                ratio = report["ratios"].get(f"{size}/{name}/c{level['concurrency']}/p50_speedup")
                lines.append(
                    f"| {int(size):,} | {name} | {level['concurrency']} | {level['p50_ms']:.1f} | {level['p95_ms']:.1f} | {level['p99_ms']:.1f} | "
                    f"{level['qps']:.1f} | {f'{ratio:.1f}×' if ratio else '-'} |"
                )
    lines += cpu_lines(report)  # bench.cpu: CPU per query at c=16 by process (runs before it recorded none)
    lines += [
        "",
        "Repeated query (embedding cache hit), concurrency 1, and gateway memory:",
        "",
        "| vectors | stack | p50 ms | gateway RSS MB |",
        "| --- | --- | --- | --- |",
    ]
    for size, runs in report["search"].items():
        for name, result in runs.items():
            if "cached_c1" in result:
                lines.append(f"| {int(size):,} | {name} | {result['cached_c1']['p50_ms']:.1f} | {result['gateway_rss_mb']:.0f} |")
    lines += [
        "",
        "Recall@10 of the Milvus HNSW index (M=16, efConstruction=200) against exact search, by `ef`:",
        "",
        "| vectors | " + " | ".join(f"ef={ef}" for ef in next(iter(report["recall_at_10"].values()))) + " |",
        "| --- |" + " --- |" * len(next(iter(report["recall_at_10"].values()))),
    ]
    for size, by_ef in report["recall_at_10"].items():
        lines.append(f"| {int(size):,} | " + " | ".join(f"{value:.3f}" for value in by_ef.values()) + " |")
    if "soak" in report:
        soak = report["soak"]
        size, stack = str(report["sizes"][-1]), "ours_fp32"
        saturation = _at(report["search"][size][stack]["unique"], 16)["qps"] if stack in report["search"].get(size, {}) else float("nan")
        lines += [
            "",
            f"Soak: {soak['seconds']:.0f} s of SearchText at concurrency {soak['concurrency']} with {soak.get('queries', 0):,} distinct queries "
            f"({soak['qps']:.1f} queries/s, {100 * soak['qps'] / saturation:.0f}% of the c=16 throughput): gateway RSS "
            f"{soak['rss_mb'][0]:.0f} MB at start, {max(soak['rss_mb']):.0f} MB at most, {soak['rss_mb'][-1]:.0f} MB at the end; "
            f"growth {soak['rss_growth_mb']:+.1f} MB in all, {soak.get('rss_growth_second_half_mb', float('nan')):+.1f} MB over the second half "
            "(the embedding cache fills to its bound in the first).",
        ]
    reindex = report["reindex"]
    lines += [
        "",
        "Reindex, photo-like 640×480 JPEG files to vectors in Milvus. The whole job includes creating the collection and "
        "sealing it (flush, wait for HNSW); the pipeline is decode, encode and insert alone, which is what the baseline's loop times:",
        "",
        "| path | whole job img/s | pipeline img/s | job vs baseline | pipeline vs baseline |",
        "| --- | --- | --- | --- | --- |",
    ]
    for precision in ("fp32", "int8"):
        if f"ours_{precision}_img_per_s" in reindex:
            job, pipeline = reindex[f"ours_{precision}_img_per_s"], reindex.get(f"ours_{precision}_pipeline_img_per_s", float("nan"))
            ratio, pipeline_ratio = (report["ratios"].get(f"reindex/{precision}{suffix}_over_baseline", float("nan")) for suffix in ("", "_pipeline"))
            lines.append(f"| ours_{precision} | {job:.1f} | {pipeline:.1f} | {ratio:.2f}× | {pipeline_ratio:.2f}× |")
    if "baseline_img_per_s" in reindex:
        lines.append(f"| baseline (one image at a time) | - | {reindex['baseline_img_per_s']:.1f} | - | 1.00× |")
    if "small" in reindex:  # bench.reindex_cases
        from bench.reindex_cases import markdown as small_runs

        lines += ["", "Incremental `t2i reindex` runs right after Triton is ready, into a new collection, and their split:", "", small_runs(reindex["small"])]
    lines += ["", "Encoder throughput through Triton (per second):", "", "| precision | tower | batch | in flight | per s |", "| --- | --- | --- | --- | --- |"]
    for precision, result in report["encoder"].items():
        for kind in ("text", "image"):
            for row in result[kind]:
                lines.append(f"| {precision} | {kind} | {row['batch']} | {row['concurrency']} | {row['per_s']:.1f} |")
    return "\n".join(lines)


def replace_between(doc: Path, start: str, end: str, body: str) -> None:
    """Replace what lies between the ``start`` and ``end`` markers of ``doc`` with ``body``."""
    text = doc.read_text()
    head, found, rest = text.partition(start)
    if not found or end not in rest:
        raise ValueError(f"{doc} lacks the markers {start} ... {end}")
    doc.write_text(f"{head}{start}\n{body}\n{end}{rest.partition(end)[2]}")


def publish_docs(report: dict[str, Any], start: str, end: str, render: Callable[[dict[str, Any]], str]) -> str:
    """Write ``render(report)`` between the markers of docs/benchmarks.md and print it."""
    text = render(report)
    replace_between(ROOT / "docs" / "benchmarks.md", start, end, text)
    print(text)
    return text


def publish(report: dict[str, Any], out: Path, suffix: str, start: str, end: str, render: Callable[[dict[str, Any]], str]) -> Path:
    """Write ``report`` as ``<out>/<date>-<host><suffix>.json``, then its rendering into docs/benchmarks.md."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{report['date']}-{report['host']}{suffix}.json"
    report["path"] = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    path.write_text(json.dumps(report, indent=2))
    publish_docs(report, start, end, render)
    from bench.docs_tables import table_for

    table = table_for(ROOT / "docs" / "benchmarks.md", start)
    if table is not None and report["path"] not in table.files:
        print(f"bench/docs_tables.py renders this table from {', '.join(table.files)}: point it at {report['path']} (tests/unit/test_docs_tables.py compares)")
    return path
