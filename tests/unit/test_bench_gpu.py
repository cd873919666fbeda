"""``bench/gpu.py`` runs on a GPU host only, so its code paths are kept honest here on the CPU."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import photo_like_jpegs
from bench.gpu import gpu_preprocess, measure, render
from inference.images import PreprocessConfig, load_pixels

pytestmark = pytest.mark.torch  # bench/gpu.py's paths run on torch


def test_gpu_preprocessing_matches_the_product_path(tmp_path: Path) -> None:
    jpegs = [path.read_bytes() for path in photo_like_jpegs(tmp_path, 3)]
    decoded = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1) for data in jpegs])
    ours = gpu_preprocess(decoded, PreprocessConfig(), torch.float32)
    product = torch.from_numpy(np.stack([load_pixels(data, PreprocessConfig()) for data in jpegs]))
    assert ours.shape == product.shape == (3, 3, 224, 224)
    difference = (ours - product).abs()
    assert float(difference.mean()) < 0.01  # resampling differs in rounding only (1/255 ≈ 0.015 after normalizing)
    assert float(difference.max()) < 0.2


def test_smoke_run_on_cpu_measures_and_renders(tmp_path: Path) -> None:
    report = measure(torch.device("cpu"), tiny=True, repeats=2, images=4, work=tmp_path)
    report["path"] = "bench/results/x-gpu.json"
    assert report["model"] == "random:tiny" and report["dtype"] == "float32"
    figures = [v for part in ("text", "vision", "cpu_decode") for k, v in report[part].items() if k.endswith(("_ms", "_per_s", "_ms_per_image"))]
    assert {"float32_images_per_s", "uint8_images_per_s", "kept_images_per_s"} <= set(report["cpu_decode"])
    assert figures and all(v > 0 for v in figures)
    assert report["parity"]["text_min_cos"] > 0.9999 and report["parity"]["vision_min_cos"] > 0.9999  # same weights, same precision
    assert "gpu_decode" not in report and not any("graph" in k for k in report["text"])  # CUDA-only parts are skipped, not faked
    text = render(report)
    assert "| text tower, batch 1, 8 tokens | latency, eager / CUDA graph |" in text and " / – |" in text
    assert "x-gpu.json" in text
