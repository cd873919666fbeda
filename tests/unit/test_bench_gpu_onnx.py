"""``make bench-gpu``'s ONNX towers (``bench/gpu_onnx.py``): real on the CPU here, the GPU's decisions with fake worker reports.

There is no GPU here: the CUDA and TensorRT paths are checked for what they record when onnxruntime-gpu
does not really run on them (it falls back to the CPU without an error), never for figures.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import bench.gpu
from bench import gpu_onnx
from core.manifest import TEXT_MODEL, VISION_MODEL, Manifest
from export.ort_gpu import CPU, CUDA, TENSORRT

pytestmark = pytest.mark.torch  # bench/gpu.py imports torch; the export runs in the main environment

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV = PROJECT_ROOT / ".venv-ort-gpu"
TINY = Manifest(model_id="random:tiny", checksum="c", dimension=32, precision="fp16", context_length=77, image_size=224, random_weights=True, version=1)


def test_on_the_cpu_the_exported_towers_are_timed_in_the_onnxruntime_gpu_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (ENV / "bin" / "python").is_file():
        pytest.fail(f"no onnxruntime-gpu environment at {ENV}: 'make install' builds it")
    monkeypatch.setenv("T2I_ORT_GPU_ENV", str(ENV))
    section = gpu_onnx.onnx_towers("cpu", tiny=True, repeats=2, work=tmp_path)
    assert section["precision"] == "fp32" and section["model"] == "random:tiny" and section["onnxruntime"] == "1.31.1"
    cpu = section["providers"]["CPU"]
    assert cpu["sessions"] == {TEXT_MODEL: [CPU], VISION_MODEL: [CPU]}
    expected = {"text_b1_len8", "text_b1_len16", "text_b1_len77", "text_b16_len16", "text_b64_len16", "text_b256_len16", "vision_b1", "vision_b32"}
    assert set(cpu["median_ms"]) == expected and all(ms > 0 for ms in cpu["median_ms"].values())
    text = "\n".join(gpu_onnx.render(section))
    assert "| CPU | text tower, batch 1, 8 tokens | " in text and "| CPU | vision tower, batch 32 | " in text and " img/s |" in text


def fake_time_cases(sessions: dict[str, list[str]], log: str) -> Callable[..., dict[str, Any]]:
    def time_cases(python: Path, models: dict[str, Path], cases: list[gpu_onnx.Case], providers: list[str], repeats: int) -> dict[str, Any]:
        used = {model: sessions[model] if providers[0] != CUDA or sessions[model][0] != TENSORRT else [CUDA, CPU] for model in models}
        return {"onnxruntime": "1.31.1", "sessions": used, "median_ms": {case.name: 1.0 for case in cases}, "log": log}

    return time_cases


def fake_export(model: str, precision: str, out: Path) -> tuple[dict[str, Path], Manifest, str]:
    assert precision == "fp16"  # what a GPU Triton serves
    note = "  fp16 parity on CUDA: not checked: no usable CUDA GPU\n"
    return {TEXT_MODEL: out / "t.onnx", VISION_MODEL: out / "v.onnx"}, TINY, "exported\n" + note


def test_a_fallback_to_the_cpu_is_not_measured_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = (
        "[W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295 CreateExecutionProviderFactoryInstance] Failed to create CUDAExecutionProvider. "
        "Require cuDNN 9.* and CUDA 13.*. Please install all dependencies\n"
        "EP Error ... Please install TensorRT libraries as mentioned in the GPU requirements page\n"
    )
    monkeypatch.setattr(gpu_onnx, "export_towers", fake_export)
    monkeypatch.setattr(gpu_onnx, "time_cases", fake_time_cases({TEXT_MODEL: [CPU], VISION_MODEL: [CPU]}, log))
    section = gpu_onnx.onnx_towers("cuda", tiny=True, repeats=2, work=tmp_path, python=Path("/env/bin/python"))
    assert set(section["providers"]) == {"CUDA", "TensorRT"}
    assert all(set(result) == {"skipped"} for result in section["providers"].values())  # the CPU's figures are not kept as CUDA's
    text = "\n".join(gpu_onnx.render(section))
    assert "| --- |" not in text
    assert "CUDA: not measured: onnxruntime-gpu did not run the towers on CUDAExecutionProvider" in text
    assert "Require cuDNN 9.* and CUDA 13.*." in text
    assert "TensorRT: not measured: " in text and "onnxruntime found no TensorRT libraries (libnvinfer)." in text
    assert "fp16 parity on CUDA: not checked: no usable CUDA GPU" in text


def test_cuda_measured_and_tensorrt_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_onnx, "export_towers", fake_export)
    monkeypatch.setattr(gpu_onnx, "time_cases", fake_time_cases({TEXT_MODEL: [TENSORRT, CUDA, CPU], VISION_MODEL: [CUDA, CPU]}, ""))
    section = gpu_onnx.onnx_towers("cuda", tiny=False, repeats=2, work=tmp_path, python=Path("/env/bin/python"))
    assert section["providers"]["CUDA"]["median_ms"]["vision_b512"] == 1.0
    assert "skipped" in section["providers"]["TensorRT"]  # clip_vision ran on CUDA, not TensorRT
    assert "clip_vision on CUDAExecutionProvider, CPUExecutionProvider" in section["providers"]["TensorRT"]["skipped"]
    text = "\n".join(gpu_onnx.render(section))
    assert "| CUDA | vision tower, batch 512 | 1.00 ms | 512,000 img/s |" in text and "| TensorRT |" not in text


def test_without_the_environment_nothing_is_exported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T2I_ORT_GPU_ENV", str(tmp_path / "absent"))
    monkeypatch.setattr(gpu_onnx, "export_towers", lambda *args: pytest.fail("exported without an environment"))
    section = gpu_onnx.onnx_towers("cuda", tiny=True, repeats=2, work=tmp_path)
    assert section == {"skipped": f"no onnxruntime-gpu environment at {tmp_path / 'absent'} (make install builds it from requirements-ort-gpu.txt)"}
    assert gpu_onnx.render(section) == ["", f"ONNX towers through onnxruntime-gpu: not measured: {section['skipped']}."]


def test_the_gpu_report_carries_the_onnx_section(tmp_path: Path) -> None:
    report = bench.gpu.measure(torch.device("cpu"), tiny=True, repeats=2, images=2, work=tmp_path)
    report["path"] = "bench/results/x-gpu.json"
    report["onnx"] = {"skipped": "no onnxruntime-gpu environment at .venv-ort-gpu"}
    assert bench.gpu.render(report).endswith("\n\nONNX towers through onnxruntime-gpu: not measured: no onnxruntime-gpu environment at .venv-ort-gpu.")


@pytest.mark.parametrize("argv", [[], ["--check"]])
def test_without_cuda_it_stops_with_a_clear_message(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["bench.gpu", *argv])
    monkeypatch.setattr(gpu_onnx, "onnx_towers", lambda *args: pytest.fail("measured without CUDA"))
    with pytest.raises(SystemExit) as exit_info:
        bench.gpu.main()
    assert exit_info.value.code == 2
    assert "no CUDA GPU is visible to PyTorch here; run this on a GPU host" in capsys.readouterr().err
