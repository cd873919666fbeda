"""``make bench-gpu``'s ONNX part: the exported towers timed with onnxruntime-gpu's CUDA and TensorRT execution providers.

``bench/gpu.py`` times the towers in PyTorch; this exports the same architecture the way
``t2i export`` does (``random``: ViT-B/32 with random weights, ``tiny`` for smoke runs; fp16 on a
GPU, as a GPU Triton would serve it, fp32 on the CPU) with the main environment's ``t2i``, and
times the ONNX files in ``.venv-ort-gpu`` (``export.ort_gpu``), at the batch sizes and text
lengths of the PyTorch figures. Each provider's figures are kept only when onnxruntime really ran
every session on it: onnxruntime-gpu falls back to the CPU without an error, and TensorRT is used
only when its libraries are present. Otherwise the section records why, in plain words.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import ROOT
from core.manifest import TEXT_MODEL, VISION_MODEL, Manifest
from export.ort_gpu import BUILD_HINT, CPU, CUDA, TENSORRT, Case, OrtGpuError, env_dir, env_python, fallback_reason, time_cases

TEXT_LENGTHS = (8, 16, 77)
TEXT_BATCHES = (16, 64, 256)
VISION_BATCHES = (1, 32, 128, 512)
NAMES = {CUDA: "CUDA", TENSORRT: "TensorRT", CPU: "CPU"}


def export_command(model: str, precision: str, out: Path) -> list[str]:
    """``t2i export`` from the main environment (torch, optimum and onnxruntime), whatever interpreter runs the bench."""
    t2i = ROOT / ".venv" / "bin" / "t2i"
    head = [str(t2i)] if t2i.is_file() else [sys.executable, "-m", "t2i.cli"]
    return [*head, "export", "--model", model, "--precision", precision, "--out", str(out)]


def export_towers(model: str, precision: str, out: Path) -> tuple[dict[str, Path], Manifest, str]:
    """Export ``model`` at ``precision`` into ``out``; the two ONNX files, the manifest and what the export printed."""
    done = subprocess.run(
        export_command(model, precision, out), capture_output=True, text=True, check=False, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    if done.returncode != 0:
        raise OrtGpuError(f"t2i export failed (exit {done.returncode}):\n{(done.stderr or done.stdout)[-3000:]}")
    manifest = Manifest.read(out)
    paths = {name: out / name / str(manifest.version) / "model.onnx" for name in (TEXT_MODEL, VISION_MODEL)}
    return paths, manifest, done.stdout


def cases(manifest: Manifest, tiny: bool) -> list[Case]:
    """Text at batch 1 by length and batched at 16 tokens; images by batch size (the PyTorch figures' shapes)."""
    rng = np.random.default_rng(0)
    result = []
    for batch, length in [(1, n) for n in TEXT_LENGTHS if n <= manifest.context_length] + [(b, 16) for b in TEXT_BATCHES]:
        ids = rng.integers(1, 1000, size=(batch, length), dtype=np.int64)
        result.append(Case(f"text_b{batch}_len{length}", TEXT_MODEL, {"input_ids": ids, "attention_mask": np.ones_like(ids)}))
    for batch in VISION_BATCHES[:2] if tiny else VISION_BATCHES:
        pixels = rng.standard_normal((batch, 3, manifest.image_size, manifest.image_size), dtype=np.float32)
        result.append(Case(f"vision_b{batch}", VISION_MODEL, {"pixel_values": pixels}))
    return result


def provider_sets(device: str) -> list[list[str]]:
    """CUDA, then TensorRT (with CUDA and the CPU behind it, as onnxruntime assigns ops), on a GPU; the CPU for a smoke run."""
    return [[CUDA, CPU], [TENSORRT, CUDA, CPU]] if device == "cuda" else [[CPU]]


def onnx_towers(device: str, tiny: bool, repeats: int, work: Path, python: Path | None = None) -> dict[str, Any]:
    """The ``onnx`` section of the report: per provider, median ms per case, or why it was not measured."""
    python = python or env_python()
    if python is None:
        return {"skipped": f"no onnxruntime-gpu environment at {env_dir()} ({BUILD_HINT})"}
    precision = "fp16" if device == "cuda" else "fp32"
    model = "tiny" if tiny else "random"
    try:
        paths, manifest, printed = export_towers(model, precision, work / "onnx")
    except OrtGpuError as exc:
        return {"skipped": str(exc)}
    section: dict[str, Any] = {"precision": precision, "export_model": model, "model": manifest.model_id, "export_parity": manifest.parity, "providers": {}}
    section["export_notes"] = [line.strip() for line in printed.splitlines() if "parity on CUDA" in line]
    timed = cases(manifest, tiny)
    for providers in provider_sets(device):
        name = NAMES[providers[0]]
        try:
            run = time_cases(python, paths, timed, providers, repeats)
        except OrtGpuError as exc:
            section["providers"][name] = {"skipped": str(exc)}
            continue
        section["onnxruntime"] = run["onnxruntime"]
        elsewhere = {tower: used for tower, used in run["sessions"].items() if not used or used[0] != providers[0]}
        if elsewhere:
            where = "; ".join(f"{tower} on {', '.join(used) or 'nothing'}" for tower, used in sorted(elsewhere.items()))
            reason = fallback_reason(run["log"], providers[0])
            section["providers"][name] = {"skipped": f"onnxruntime-gpu did not run the towers on {providers[0]} ({where}): {reason}"}
        else:
            section["providers"][name] = {"median_ms": run["median_ms"], "sessions": run["sessions"]}
    return section


def render(section: dict[str, Any] | None) -> list[str]:
    """Lines for the docs: a table of the measured providers, and plain sentences for what was not measured."""
    if section is None:
        return []
    if "skipped" in section:
        return ["", f"ONNX towers through onnxruntime-gpu: not measured: {section['skipped']}."]
    measured = {name: result for name, result in section["providers"].items() if "skipped" not in result}
    notes = [f"{name}: not measured: {result['skipped'].rstrip('.')}." for name, result in section["providers"].items() if "skipped" in result]
    lines = [
        "",
        f"ONNX towers (`t2i export --model {section['export_model']} --precision {section['precision']}`) through onnxruntime-gpu "
        f"{section.get('onnxruntime', '?')} in `.venv-ort-gpu`, median of each call:",
        "",
        "| provider | case | latency | throughput |",
        "| --- | --- | --- | --- |",
    ]
    if not measured:
        lines = lines[:2]
        lines[1] = lines[1].removesuffix(", median of each call:") + ":"
    for name, result in measured.items():
        for case, ms in result["median_ms"].items():
            tower, batch, *length = case.split("_")  # text_b1_len8, vision_b32
            label = f"{tower} tower, batch {batch[1:]}" + (f", {length[0][3:]} tokens" if length else "")
            unit = "queries/s" if tower == "text" else "img/s"
            lines.append(f"| {name} | {label} | {ms:.2f} ms | {int(batch[1:]) / (ms / 1000):,.0f} {unit} |")
    return [*lines, "", *notes, *section.get("export_notes", [])]
