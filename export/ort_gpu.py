"""The exported towers through onnxruntime-gpu, which lives in its own environment (``.venv-ort-gpu``).

``onnxruntime-gpu`` and the main environment's ``onnxruntime`` install the same package and clash,
so the GPU build gets an environment of its own (``requirements-ort-gpu.txt``; ``make install``
builds it) and is driven from here through ``export/ort_gpu_worker.py`` in a subprocess: inputs and
outputs pass as ``.npz`` files, the providers each session really used come back in a JSON report.

- ``embed``: the towers' embeddings with the providers asked for (the CPU, for the test that holds
  this environment to the main one; CUDA for the fp16 check).
- ``fp16_cuda_parity``: what ``t2i export --precision fp16`` runs. It checks the fp16 towers on
  CUDA against PyTorch when a GPU can run them, and otherwise says why not, in plain words, without
  a figure (``cuda_unavailable`` is the decision).
- ``time_cases``: median latencies per provider, for ``make bench-gpu``.

The environment is ``T2I_ORT_GPU_ENV`` when set, else ``.venv-ort-gpu`` in the working directory.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError

ENV_VAR = "T2I_ORT_GPU_ENV"
DEFAULT_ENV = Path(".venv-ort-gpu")
WORKER = Path(__file__).with_name("ort_gpu_worker.py")
CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
# fp16 weights and activations against fp32 PyTorch; a real fp16 export sits near 0.9999, a broken one
# (overflow to inf/NaN, a wrong cast) far below.
FP16_CUDA_THRESHOLD = 0.999
BUILD_HINT = "make install builds it from requirements-ort-gpu.txt"


class OrtGpuError(UserError):
    """The onnxruntime-gpu environment is missing or its worker failed."""


@dataclass(frozen=True)
class Case:
    """One call of one tower: ``inputs`` maps the tower's input names to arrays."""

    name: str
    model: str
    inputs: dict[str, np.ndarray]


@dataclass
class WorkerRun:
    """What the worker reports: outputs by case, median ms by case (when timed), providers per session."""

    outputs: dict[str, np.ndarray]
    median_ms: dict[str, float]
    sessions: dict[str, list[str]]
    available: list[str]
    version: str
    log: str = ""


@dataclass
class CudaParity:
    """The fp16-on-CUDA check of an export: ``parity`` holds its figures when ``checked``, ``note`` says what happened."""

    checked: bool
    note: str
    parity: dict[str, float] = field(default_factory=dict)


def env_dir() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_ENV)


def env_python(env: Path | None = None) -> Path | None:
    """The environment's interpreter, or None when the environment is not built."""
    python = (env or env_dir()) / "bin" / "python"
    return python.absolute() if python.is_file() else None


def run_cases(python: Path, models: dict[str, Path], cases: Sequence[Case], providers: Sequence[str], repeats: int = 0, timeout_s: float = 1800) -> WorkerRun:
    """Run ``cases`` in the worker under ``python``; raises ``OrtGpuError`` when it fails."""
    with tempfile.TemporaryDirectory(prefix="t2i-ort-gpu-") as tmp:
        work = Path(tmp)
        arrays = {f"{case.name}/{name}": value for case in cases for name, value in case.inputs.items()}
        np.savez(work / "inputs.npz", **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as one array-like
        spec = {
            "models": {name: str(Path(path).absolute()) for name, path in models.items()},
            "providers": list(providers),
            "inputs": str(work / "inputs.npz"),
            "cases": [{"name": case.name, "model": case.model, "inputs": {name: f"{case.name}/{name}" for name in case.inputs}} for case in cases],
            "repeats": repeats,
            "outputs": str(work / "outputs.npz"),
            "report": str(work / "report.json"),
        }
        (work / "spec.json").write_text(json.dumps(spec))
        try:
            done = subprocess.run([str(python), "-I", str(WORKER), str(work / "spec.json")], capture_output=True, text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OrtGpuError(f"the onnxruntime-gpu worker did not run under {python}: {exc}") from exc
        if done.returncode != 0:
            raise OrtGpuError(f"the onnxruntime-gpu worker under {python} failed (exit {done.returncode}):\n{(done.stderr or done.stdout)[-3000:]}")
        report = json.loads((work / "report.json").read_text())
        with np.load(work / "outputs.npz") as saved:
            outputs = {name: saved[name] for name in saved.files}
    return WorkerRun(outputs, report["median_ms"], report["sessions"], report["available"], report["onnxruntime"], done.stderr + done.stdout)


def tower_cases(inputs: dict[str, dict[str, np.ndarray]]) -> list[Case]:
    """One case per tower, named after it, from ``export.parity.reference_inputs``-shaped inputs."""
    return [Case(model, model, feeds) for model, feeds in inputs.items()]


def embed(python: Path, paths: dict[str, Path], inputs: dict[str, dict[str, np.ndarray]], providers: Sequence[str]) -> WorkerRun:
    """The towers' first outputs (the embeddings) for ``inputs``, one case per tower."""
    return run_cases(python, paths, tower_cases(inputs), providers)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def fallback_reason(log: str, provider: str = CUDA) -> str:
    """onnxruntime's own words for why ``provider`` did not start (its 'Failed to create ...' warning), if it said so."""
    lines = [_ANSI.sub("", line).strip() for line in log.splitlines()]
    if provider == TENSORRT:
        found = any("install TensorRT libraries" in line for line in lines)
        return "onnxruntime found no TensorRT libraries (libnvinfer)" if found else "onnxruntime gave no reason"
    for line in lines:
        if "Failed to create CUDAExecutionProvider" in line:
            return line.split("] ", 1)[-1].split(" Please install", 1)[0]
    for line in lines:
        if "Failed to load library" in line:
            return line.split("] ", 1)[-1].rsplit(" : ", 1)[-1]
    return "onnxruntime gave no reason"


def cuda_unavailable(run: WorkerRun) -> str | None:
    """Why the towers did not run on CUDA in ``run``, or None when every session did."""
    if CUDA not in run.available:
        return f"this onnxruntime ({run.version}) has no CUDAExecutionProvider; is onnxruntime-gpu the one installed?"
    on_cpu = sorted(model for model, used in run.sessions.items() if not used or used[0] not in (CUDA, TENSORRT))
    if on_cpu:
        return f"no usable CUDA GPU: onnxruntime-gpu {run.version} fell back to the CPU for {', '.join(on_cpu)} ({fallback_reason(run.log)})"
    return None


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) / np.linalg.norm(a, axis=1, keepdims=True)
    b = b.astype(np.float64) / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def fp16_cuda_parity(
    paths: dict[str, Path],
    inputs: dict[str, dict[str, np.ndarray]],
    reference: dict[str, np.ndarray],
    python: Path | None = None,
    runner: Callable[[Path, dict[str, Path], dict[str, dict[str, np.ndarray]], Sequence[str]], WorkerRun] = embed,
    threshold: float = FP16_CUDA_THRESHOLD,
) -> CudaParity:
    """The fp16 towers ``paths`` on CUDA against the PyTorch ``reference`` embeddings.

    Not checked (and said so in ``note``) when the environment is missing or broken, or when no
    session ran on CUDA. Raises ``ParityError`` when a tower that did run on CUDA is below
    ``threshold`` (a NaN counts as below).
    """
    from export.parity import ParityError  # here, not at the top: make bench-gpu's interpreter needs no onnxruntime of its own

    python = python or env_python()
    if python is None:
        return CudaParity(False, f"fp16 parity on CUDA: not checked: no onnxruntime-gpu environment at {env_dir()} ({BUILD_HINT})")
    try:
        run = runner(python, paths, inputs, [CUDA, CPU])
    except OrtGpuError as exc:
        return CudaParity(False, f"fp16 parity on CUDA: not checked: {exc}")
    reason = cuda_unavailable(run)
    if reason is not None:
        return CudaParity(False, f"fp16 parity on CUDA: not checked: {reason}")
    parity = {f"{model}_fp16_cuda": _cosine_min(reference[model], run.outputs[model]) for model in reference}
    for key, value in parity.items():
        if math.isnan(value) or value < threshold:
            raise ParityError(f"{key}: min cosine similarity to PyTorch on CUDA is {value:.6f}, below {threshold}")
    figures = ", ".join(f"{key} {value:.6f}" for key, value in sorted(parity.items()))
    return CudaParity(True, f"fp16 parity on CUDA (onnxruntime-gpu {run.version}, {CUDA}): min cosine {figures}", parity)


def time_cases(python: Path, models: dict[str, Path], cases: Sequence[Case], providers: Sequence[str], repeats: int) -> dict[str, Any]:
    """Median ms per case with ``providers``, and the providers each session really used, for ``make bench-gpu``."""
    run = run_cases(python, models, cases, providers, repeats=repeats)
    return {"onnxruntime": run.version, "sessions": run.sessions, "median_ms": run.median_ms, "log": run.log}
