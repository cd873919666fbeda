"""The fp16-on-CUDA check of ``t2i export`` (``export.ort_gpu``): when it runs, and what it says when it cannot.

The worker's reports are fakes here (this machine has no GPU); ``tests/integration/test_ort_gpu_env.py``
runs the real onnxruntime-gpu environment on the CPU, and the last test here runs a real fp16 export.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

import export.main
from core.manifest import TEXT_MODEL, VISION_MODEL, Manifest
from export.ort_gpu import CPU, CUDA, TENSORRT, OrtGpuError, WorkerRun, cuda_unavailable, env_python, fp16_cuda_parity
from export.parity import ParityError

pytestmark = pytest.mark.torch  # export.parity (which export.ort_gpu's ParityError comes from) loads torch and onnxruntime

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ALL = [TENSORRT, CUDA, CPU]
# What onnxruntime-gpu 1.31.1 wrote to stderr here, on a host without CUDA 13 (seen while writing this).
FALLBACK_LOG = (
    "\x1b[1;31m2026-12-02 01:49:18.906156508 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] ... Failed to load library "
    "libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory\n\x1b[m\n"
    "\x1b[0;93m2026-12-02 01:49:18.908776202 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295 CreateExecutionProviderFactoryInstance] "
    "Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*. Please install all dependencies as mentioned in the GPU "
    "requirements page, make sure they're in the PATH, and that your GPU is supported.\x1b[m\n"
)


def reference() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {TEXT_MODEL: rng.normal(size=(7, 32)).astype(np.float32), VISION_MODEL: rng.normal(size=(8, 32)).astype(np.float32)}


def worker(outputs: dict[str, np.ndarray], sessions: dict[str, list[str]], available: Sequence[str] = ALL, log: str = "") -> WorkerRun:
    return WorkerRun(outputs, {}, sessions, list(available), "1.31.1", log)


def fake_runner(run: WorkerRun | Exception, calls: list[Sequence[str]] | None = None) -> Callable[..., WorkerRun]:
    def runner(python: Path, paths: dict[str, Path], inputs: dict[str, dict[str, np.ndarray]], providers: Sequence[str]) -> WorkerRun:
        if calls is not None:
            calls.append(providers)
        if isinstance(run, Exception):
            raise run
        return run

    return runner


PATHS = {TEXT_MODEL: Path("t.onnx"), VISION_MODEL: Path("v.onnx")}
PYTHON = Path("/env/bin/python")


def test_on_cuda_the_figures_are_checked_and_kept() -> None:
    ref = reference()
    close = {model: value + np.float32(1e-3) * np.random.default_rng(1).normal(size=value.shape).astype(np.float32) for model, value in ref.items()}
    calls: list[Sequence[str]] = []
    run = worker(close, {TEXT_MODEL: [CUDA, CPU], VISION_MODEL: [CUDA, CPU]})
    result = fp16_cuda_parity(PATHS, {}, ref, python=PYTHON, runner=fake_runner(run, calls))
    assert calls == [[CUDA, CPU]]  # CUDA asked for first, the CPU only for the ops CUDA lacks
    assert result.checked and set(result.parity) == {"clip_text_fp16_cuda", "clip_vision_fp16_cuda"}
    assert all(0.999 < value < 1.0 for value in result.parity.values())
    assert result.note.startswith("fp16 parity on CUDA (onnxruntime-gpu 1.31.1, CUDAExecutionProvider): min cosine clip_text_fp16_cuda 0.99")


def test_a_tower_off_on_cuda_fails_the_export() -> None:
    ref = reference()
    wrong = {TEXT_MODEL: ref[TEXT_MODEL], VISION_MODEL: -ref[VISION_MODEL]}
    run = worker(wrong, {TEXT_MODEL: [CUDA, CPU], VISION_MODEL: [CUDA, CPU]})
    with pytest.raises(ParityError, match=r"clip_vision_fp16_cuda: min cosine similarity to PyTorch on CUDA is -1\.0"):
        fp16_cuda_parity(PATHS, {}, ref, python=PYTHON, runner=fake_runner(run))


def test_nan_from_fp16_overflow_fails_rather_than_passes() -> None:
    ref = reference()
    broken = {TEXT_MODEL: np.full_like(ref[TEXT_MODEL], np.nan), VISION_MODEL: ref[VISION_MODEL]}
    run = worker(broken, {TEXT_MODEL: [CUDA], VISION_MODEL: [CUDA]})
    with pytest.raises(ParityError, match=r"clip_text_fp16_cuda: .* nan"):
        fp16_cuda_parity(PATHS, {}, ref, python=PYTHON, runner=fake_runner(run))


def test_a_silent_fallback_to_the_cpu_is_said_plainly_with_onnxruntimes_reason() -> None:
    run = worker(reference(), {TEXT_MODEL: [CPU], VISION_MODEL: [CPU]}, log=FALLBACK_LOG)
    result = fp16_cuda_parity(PATHS, {}, reference(), python=PYTHON, runner=fake_runner(run))
    assert not result.checked and result.parity == {}  # the CPU's figures are not passed off as CUDA's
    assert result.note == (
        "fp16 parity on CUDA: not checked: no usable CUDA GPU: onnxruntime-gpu 1.31.1 fell back to the CPU for clip_text, clip_vision "
        "(Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*.)"
    )


def test_one_tower_on_the_cpu_is_not_a_cuda_check() -> None:
    run = worker(reference(), {TEXT_MODEL: [CUDA, CPU], VISION_MODEL: [CPU]})
    assert cuda_unavailable(run) == "no usable CUDA GPU: onnxruntime-gpu 1.31.1 fell back to the CPU for clip_vision (onnxruntime gave no reason)"
    assert cuda_unavailable(worker(reference(), {TEXT_MODEL: [TENSORRT, CUDA, CPU], VISION_MODEL: [CUDA, CPU]})) is None


def test_a_build_without_cuda_is_named() -> None:
    run = worker(reference(), {TEXT_MODEL: [CPU], VISION_MODEL: [CPU]}, available=[CPU])
    result = fp16_cuda_parity(PATHS, {}, reference(), python=PYTHON, runner=fake_runner(run))
    assert not result.checked and "has no CUDAExecutionProvider; is onnxruntime-gpu the one installed?" in result.note


def test_no_environment_and_a_broken_one_are_said_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T2I_ORT_GPU_ENV", str(tmp_path / "absent"))
    assert env_python() is None
    result = fp16_cuda_parity(PATHS, {}, reference(), runner=fake_runner(AssertionError("must not run")))
    assert not result.checked
    assert (
        result.note
        == f"fp16 parity on CUDA: not checked: no onnxruntime-gpu environment at {tmp_path / 'absent'} (make install builds it from requirements-ort-gpu.txt)"
    )
    broken = fp16_cuda_parity(PATHS, {}, reference(), python=PYTHON, runner=fake_runner(OrtGpuError("the worker failed (exit 1)")))
    assert not broken.checked and broken.note == "fp16 parity on CUDA: not checked: the worker failed (exit 1)"


def test_the_command_prints_the_note(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = Manifest(model_id="m", checksum="c", dimension=32, precision="fp16", context_length=77, image_size=224, random_weights=False, version=1)

    def fake_export(*args: object, notes: list[str] | None = None, **kwargs: object) -> Manifest:
        assert notes is not None
        notes.append("fp16 parity on CUDA: not checked: no usable CUDA GPU")
        return manifest

    monkeypatch.setattr(export.main, "run_export", fake_export)
    export.main.command(argparse.Namespace(model="m", out=Path("out"), precision="fp16", version=1))
    assert "  fp16 parity on CUDA: not checked: no usable CUDA GPU\n" in capsys.readouterr().out


def test_a_real_fp16_export_here_says_why_cuda_was_not_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end on this machine: the real environment when it is built (no GPU here), else its absence."""
    env = PROJECT_ROOT / ".venv-ort-gpu"
    monkeypatch.setenv("T2I_ORT_GPU_ENV", str(env))
    notes: list[str] = []
    manifest = export.main.run_export("tiny", tmp_path, precision="fp16", notes=notes)
    assert len(notes) == 1 and notes[0].startswith("fp16 parity on CUDA")
    if "clip_text_fp16_cuda" not in manifest.parity:
        assert notes[0].startswith("fp16 parity on CUDA: not checked: ")
        assert ("fell back to the CPU" in notes[0]) if env_python(env) else ("no onnxruntime-gpu environment" in notes[0])
    assert {"clip_text_fp16", "clip_vision_fp16"} <= set(manifest.parity)  # the CPU's fp16 figures, as before
