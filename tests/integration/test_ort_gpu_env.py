"""``.venv-ort-gpu`` (onnxruntime-gpu, ``requirements-ort-gpu.txt``) against the main environment's onnxruntime.

``make install`` builds that environment. Here, on the CPU, its ``CPUExecutionProvider`` must give
the exported towers' embeddings that the main environment's onnxruntime gives (the session's tiny
export, real tokenizer and preprocessing, real sample photos); on a GPU host the same environment
runs the towers on CUDA (``export.ort_gpu.fp16_cuda_parity``, ``make bench-gpu``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

from core.manifest import TEXT_MODEL, VISION_MODEL, Manifest
from export.ort_gpu import CPU, embed, env_python
from export.parity import onnx_embeddings, reference_inputs
from inference.images import PreprocessConfig
from inference.tokenizer import ClipTokenizer
from tests.support.stack import PROJECT_ROOT

REQUIREMENTS = PROJECT_ROOT / "requirements-ort-gpu.txt"
CUDA_REQUIREMENTS = PROJECT_ROOT / "requirements-ort-gpu-cuda.txt"
ENV = PROJECT_ROOT / ".venv-ort-gpu"

pytestmark = pytest.mark.torch  # export.parity: the main environment's onnxruntime and torch


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


@pytest.fixture(scope="module")
def python() -> Path:
    found = env_python(ENV)
    if found is None:
        pytest.fail(f"no onnxruntime-gpu environment at {ENV}: 'make install' (or 'make ort-gpu-env') builds it from {REQUIREMENTS.name}")
    return found


def installed(python: Path) -> dict[str, str]:
    script = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
    return dict(json.loads(subprocess.run([str(python), "-I", "-c", script], capture_output=True, text=True, check=True).stdout))


def test_the_environment_holds_what_its_requirements_file_pins(python: Path) -> None:
    pins = dict(line.split("==") for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#"))
    assert "onnxruntime-gpu" in pins and "numpy" in pins
    there = installed(python)
    assert {name: there.get(name) for name in pins} == pins
    assert "onnxruntime" not in there  # the CPU build would shadow the GPU one: they install the same package


def test_the_cuda_wheels_pinned_for_gpu_hosts_are_what_this_onnxruntime_gpu_asks_for(python: Path) -> None:
    """``make ort-gpu-cuda`` installs requirements-ort-gpu-cuda.txt; its pins must meet the installed wheel's cuda and cudnn extras."""
    script = "import importlib.metadata as m, json; print(json.dumps(m.requires('onnxruntime-gpu')))"
    requires = [Requirement(text) for text in json.loads(subprocess.run([str(python), "-I", "-c", script], capture_output=True, text=True, check=True).stdout)]
    extras = [req for req in requires if req.marker is not None and any(req.marker.evaluate({"extra": extra}) for extra in ("cuda", "cudnn"))]
    pins = dict(line.split("==") for line in CUDA_REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#"))
    assert len(extras) >= 5  # nvrtc, runtime, cufft, curand (cuda) and cudnn
    unmet = {req.name: str(req.specifier) for req in extras if req.name not in pins or pins[req.name] not in req.specifier}
    assert unmet == {}, f"requirements-ort-gpu-cuda.txt does not meet onnxruntime-gpu's extras: {unmet}"


def test_its_cpu_embeddings_equal_the_main_environments(python: Path, tiny_repo: Path) -> None:
    manifest = Manifest.read(tiny_repo)
    text_dir, vision_dir = tiny_repo / TEXT_MODEL / "1", tiny_repo / VISION_MODEL / "1"
    paths = {TEXT_MODEL: text_dir / "model.onnx", VISION_MODEL: vision_dir / "model.onnx"}
    inputs = reference_inputs(
        ClipTokenizer(text_dir / "tokenizer.json", manifest.context_length), PreprocessConfig.from_file(vision_dir / "preprocessor_config.json")
    )
    main = onnx_embeddings(paths, inputs)  # this environment's onnxruntime (the CPU build)
    gpu_build = embed(python, paths, inputs, [CPU])
    pins = dict(line.split("==") for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#"))
    assert gpu_build.version == pins["onnxruntime-gpu"]
    assert gpu_build.sessions == {TEXT_MODEL: [CPU], VISION_MODEL: [CPU]}
    for model in (TEXT_MODEL, VISION_MODEL):
        assert gpu_build.outputs[model].shape == main[model].shape == (len(inputs[model][next(iter(inputs[model]))]), manifest.dimension)
        similarity = cosines(main[model], gpu_build.outputs[model])
        assert float(similarity.min()) >= 0.9999, f"{model}: min cosine {similarity.min():.6f} between onnxruntime-gpu on the CPU and onnxruntime"
