"""``make bench-gpu``: the production GPU path, measured on a machine with a CUDA GPU (not CI).

Production serves the towers on a GPU (``model_repository/*/config.pbtxt``: ``KIND_GPU``, dynamic
batching), and a reindex decodes JPEGs before they reach it. Triton is not installed on the lent
GPU machines, so this measures the parts with PyTorch fp16 on the same ViT-B/32 architecture
(``export.checkpoint.random_configs``), which bounds what a serving runtime on that GPU can reach:

- the text tower at batch 1 by query length, launched op by op (eager) and replayed as one CUDA
  graph (what TensorRT or onnxruntime's CUDA graphs do for a served model), and batched;
- the vision tower by batch size (img/s);
- JPEG decoding with the product's own CPU code (``inference.images``) on one core and on every
  core (a process pool sending float32 pixels, uint8 crops as the reindex job does, or nothing),
  against nvJPEG on the GPU (``torchvision.io.decode_jpeg``) with the same CLIP
  preprocessing done on the GPU, and the whole GPU reindex path (JPEG bytes → embeddings);
- parity: fp16 against fp32 embeddings, CUDA graph against eager, GPU against CPU preprocessing;
- beside them, the exported ONNX towers (fp16, what a GPU Triton's onnxruntime backend serves) through
  onnxruntime-gpu's CUDA execution provider, and TensorRT's when its libraries are present
  (``bench.gpu_onnx``, in ``.venv-ort-gpu``); a provider onnxruntime did not really use is reported
  as not measured, with the reason.

``python -m bench.gpu`` measures and writes ``bench/results/<date>-<host>-gpu.json`` and the section
between the ``gpu`` markers of ``docs/benchmarks.md``; ``--render FILE`` rewrites that section from
a JSON written on another machine. ``--device cpu --tiny`` runs every code path on a CPU with a
small model (the unit test does). ``--check`` only says whether a CUDA GPU is visible (``make
bench-gpu`` runs it first, so a host without one stops there). Nothing here is a test assertion on time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench import gpu_onnx
from bench.data import photo_like_jpegs
from bench.report import ROOT, measured, publish, publish_docs, run_header
from export.checkpoint import random_configs
from inference.images import PreprocessConfig, load_crop, load_pixels, normalize, resize_shape

START, END = "<!-- gpu:start -->", "<!-- gpu:end -->"
TEXT_LENGTHS = (8, 16, 77)
TEXT_BATCHES = (16, 64, 256)
VISION_BATCHES = (1, 32, 128, 512)
DECODE_BATCH = 128


def build_towers(device: torch.device, dtype: torch.dtype, tiny: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The text and vision towers with projection, seeded random weights, on ``device`` in ``dtype``."""
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    text_config, vision_config = random_configs("tiny" if tiny else "random")
    torch.manual_seed(0)
    text = CLIPTextModelWithProjection(text_config).eval()
    vision = CLIPVisionModelWithProjection(vision_config).eval()
    return text.to(device, dtype), vision.to(device, dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(run: Callable[[], object], device: torch.device, repeats: int, warmup: int = 5) -> float:
    """Median wall time of ``run`` in ms, each call waited for (what one request sees)."""
    for _ in range(warmup):
        run()
    sync(device)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync(device)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1000)


class Replay:
    """``fn(*inputs)`` captured once as a CUDA graph; calling it replays the graph (no per-op launches)."""

    def __init__(self, fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> None:
        self.inputs = inputs
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn(*inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(*inputs)

    def __call__(self) -> torch.Tensor:
        self.graph.replay()
        return self.output


def text_embeds(text: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda ids: text(input_ids=ids).text_embeds


def image_embeds(vision: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda pixels: vision(pixel_values=pixels).image_embeds


def cosine_min(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.float(), b.float(), dim=-1).min())


def text_tower(text: torch.nn.Module, device: torch.device, repeats: int) -> dict[str, Any]:
    """Batch-1 latency by length (eager and CUDA graph) and batched queries/s at 16 tokens."""
    encode = text_embeds(text)
    config: Any = text.config  # a transformers config (torch.nn.Module's __getattr__ types it as a tensor or module)
    vocab = int(config.vocab_size)
    rng = torch.Generator().manual_seed(0)
    result: dict[str, Any] = {}
    for length in TEXT_LENGTHS:
        ids = torch.randint(1, vocab - 1, (1, length), generator=rng).to(device)
        result[f"b1_len{length}_eager_ms"] = median_ms(lambda: encode(ids), device, repeats)
        if device.type == "cuda":
            replay = Replay(encode, (ids,))
            result[f"b1_len{length}_graph_ms"] = median_ms(replay, device, repeats)
            result[f"b1_len{length}_graph_vs_eager_cos"] = cosine_min(replay(), encode(ids))
    for batch in TEXT_BATCHES:
        ids = torch.randint(1, vocab - 1, (batch, 16), generator=rng).to(device)
        run = Replay(encode, (ids,)) if device.type == "cuda" else (lambda: encode(ids))
        ms = median_ms(run, device, max(3, repeats // 4))
        result[f"b{batch}_len16_ms"] = ms
        result[f"b{batch}_len16_queries_per_s"] = batch / (ms / 1000)
    return result


def vision_tower(vision: torch.nn.Module, device: torch.device, dtype: torch.dtype, repeats: int, batches: tuple[int, ...]) -> dict[str, Any]:
    """img/s by batch size; batch 1 also as a CUDA graph."""
    encode = image_embeds(vision)
    config: Any = vision.config
    size = int(config.image_size)
    result: dict[str, Any] = {}
    for batch in batches:
        pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch)).to(device, dtype)
        ms = median_ms(lambda: encode(pixels), device, max(3, repeats // 4))
        result[f"b{batch}_ms"] = ms
        result[f"b{batch}_images_per_s"] = batch / (ms / 1000)
        if batch == 1 and device.type == "cuda":
            result["b1_graph_ms"] = median_ms(Replay(encode, (pixels,)), device, repeats)
    return result


def precision_parity(
    towers32: tuple[torch.nn.Module, torch.nn.Module], towers16: tuple[torch.nn.Module, torch.nn.Module], device: torch.device, dtype: torch.dtype
) -> dict[str, float]:
    """Smallest cosine between fp32 and ``dtype`` embeddings of the same inputs (same weights)."""
    text32, vision32 = towers32
    text16, vision16 = towers16
    rng = torch.Generator().manual_seed(7)
    text_config: Any = text32.config
    vision_config: Any = vision32.config
    ids = torch.randint(1, int(text_config.vocab_size) - 1, (32, 16), generator=rng).to(device)
    size = int(vision_config.image_size)
    pixels = torch.randn(16, 3, size, size, generator=rng).to(device)
    with torch.inference_mode():
        return {
            "text_min_cos": cosine_min(text_embeds(text32)(ids), text_embeds(text16)(ids)),
            "vision_min_cos": cosine_min(image_embeds(vision32)(pixels), image_embeds(vision16)(pixels.to(dtype))),
        }


def gpu_preprocess(images: torch.Tensor, config: PreprocessConfig, dtype: torch.dtype) -> torch.Tensor:
    """Decoded ``uint8 [n, 3, h, w]`` images (one size) to CLIP ``pixel_values`` on their device.

    The same steps as ``inference.images.preprocess_one``: shortest-edge bicubic resize, center
    crop, rescale, normalize; done with torch ops so they run next to the decoder.
    """
    new_width, new_height = resize_shape(images.shape[-1], images.shape[-2], config.shortest_edge)
    size = (new_height, new_width)
    resized = F.interpolate(images.float(), size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 255).round_()
    top, left = (size[0] - config.crop_size) // 2, (size[1] - config.crop_size) // 2
    crop = resized[..., top : top + config.crop_size, left : left + config.crop_size] / 255
    mean = torch.tensor(config.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=images.device).view(1, 3, 1, 1)
    return ((crop - mean) / std).to(dtype)


def _cpu_pixels(data: bytes) -> np.ndarray:
    return load_pixels(data, PreprocessConfig())


def _cpu_crop(data: bytes) -> np.ndarray:
    return load_crop(data, PreprocessConfig())


def _cpu_crop_kept(data: bytes) -> int:
    """Decode, resize and crop in the worker but send back only a size (isolates the pipe's cost)."""
    return _cpu_crop(data).nbytes


def cpu_decode(jpegs: list[bytes], workers: int) -> dict[str, float]:
    """The product's CPU decoding on one core and on ``workers`` processes, by what comes back.

    ``float32_images_per_s``: each worker returns float32 pixels (602 KB an image; the reindex pool
    did this before it sent crops); ``uint8_images_per_s``: it returns the uint8 crop (150 KB) and
    the parent normalizes the batch, as the reindex pool does now; ``kept_images_per_s``: nothing
    comes back, so the differences are the pipe.
    """
    config = PreprocessConfig()
    start = time.perf_counter()
    for data in jpegs:
        _cpu_pixels(data)
    result = {"one_core_ms_per_image": (time.perf_counter() - start) * 1000 / len(jpegs), "workers": workers}
    work = jpegs * max(1, workers)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_cpu_pixels, jpegs[:workers])
        for name, run in (
            ("float32", lambda: pool.map(_cpu_pixels, work, chunksize=8)),
            ("uint8", lambda: [normalize(np.stack(chunk), config) for chunk in _chunks(pool.map(_cpu_crop, work, chunksize=8), 32)]),
            ("kept", lambda: pool.map(_cpu_crop_kept, work, chunksize=8)),
        ):
            start = time.perf_counter()
            run()
            result[f"{name}_images_per_s"] = len(work) / (time.perf_counter() - start)
    return result


def _chunks(items: list[np.ndarray], size: int) -> list[list[np.ndarray]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def gpu_decode(jpegs: list[bytes], vision: torch.nn.Module, device: torch.device, dtype: torch.dtype, repeats: int) -> dict[str, Any]:
    """nvJPEG decode, GPU preprocessing, and the whole GPU reindex path (bytes → embeddings), img/s."""
    from torchvision.io import decode_jpeg

    config = PreprocessConfig()
    batch = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs[:DECODE_BATCH]]
    encode = image_embeds(vision)

    def decode() -> torch.Tensor:
        return torch.stack(decode_jpeg(batch, device=device))

    def decode_and_preprocess() -> torch.Tensor:
        return gpu_preprocess(decode(), config, dtype)

    def end_to_end() -> torch.Tensor:
        return encode(decode_and_preprocess())

    n = len(batch)
    result: dict[str, Any] = {"batch": n}
    for name, run in (("decode", decode), ("decode_preprocess", decode_and_preprocess), ("jpeg_to_embedding", end_to_end)):
        result[f"{name}_images_per_s"] = n / (median_ms(run, device, repeats, warmup=3) / 1000)
    on_gpu = decode_and_preprocess().float().cpu()
    on_cpu = torch.from_numpy(np.stack([_cpu_pixels(data) for data in jpegs[:n]]))
    result["pixels_mean_abs_diff"] = float((on_gpu - on_cpu).abs().mean())
    with torch.inference_mode():
        result["embedding_min_cos"] = cosine_min(encode(on_gpu.to(device, dtype)), encode(on_cpu.to(device, dtype)))
    return result


def describe(device: torch.device, parameters: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30), "cuda": torch.version.cuda}
    return run_header(info.get("gpu", "no GPU"), parameters) | info


def measure(device: torch.device, tiny: bool, repeats: int, images: int, work: Path) -> dict[str, Any]:
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    parameters = {
        "device": device.type,
        "tiny": tiny,
        "repeats": repeats,
        "images": images,
        "text_lengths": list(TEXT_LENGTHS),
        "text_batches": list(TEXT_BATCHES),
        "vision_batches": list(VISION_BATCHES[:2] if tiny else VISION_BATCHES),
        "decode_batch": DECODE_BATCH,
    }
    report = describe(device, parameters) | {"dtype": str(dtype).removeprefix("torch."), "model": "random:tiny" if tiny else "random:vit-b-32"}
    jpegs = [path.read_bytes() for path in photo_like_jpegs(work / "jpegs", images)]
    report["cpu_decode"] = cpu_decode(jpegs, os.cpu_count() or 1)
    with torch.inference_mode():
        text, vision = build_towers(device, dtype, tiny)
        report["text"] = text_tower(text, device, repeats)
        report["vision"] = vision_tower(vision, device, dtype, repeats, VISION_BATCHES[:2] if tiny else VISION_BATCHES)
        if device.type == "cuda":
            report["gpu_decode"] = gpu_decode(jpegs, vision, device, dtype, repeats)
    report["parity"] = precision_parity(build_towers(device, torch.float32, tiny), (text, vision), device, dtype)
    return report


def render(report: dict[str, Any]) -> str:
    text, vision, cpu = report["text"], report["vision"], report["cpu_decode"]
    lines = [
        f"{measured(report)}, PyTorch {report['torch']}, {report['dtype']}, model `{report['model']}`. Raw data: `{report['path']}`.",
        "",
        "| part | measure | result |",
        "| --- | --- | --- |",
    ]
    for length in TEXT_LENGTHS:
        graph = text.get(f"b1_len{length}_graph_ms")
        lines.append(
            f"| text tower, batch 1, {length} tokens | latency, eager / CUDA graph | {text[f'b1_len{length}_eager_ms']:.2f} ms"
            + (f" / {graph:.2f} ms |" if graph is not None else " / – |")
        )
    for batch in TEXT_BATCHES:
        lines.append(
            f"| text tower, batch {batch}, 16 tokens | throughput | {text[f'b{batch}_len16_queries_per_s']:,.0f} queries/s "
            f"({text[f'b{batch}_len16_ms']:.2f} ms a batch) |"
        )
    for key in sorted((k for k in vision if k.endswith("_images_per_s")), key=lambda k: int(k[1:].split("_")[0])):
        batch = key[1:].split("_")[0]
        lines.append(f"| vision tower, batch {batch} | throughput | {vision[key]:,.0f} img/s ({vision[f'b{batch}_ms']:.2f} ms a batch) |")
    if "b1_graph_ms" in vision:
        lines.append(f"| vision tower, batch 1 | latency, CUDA graph | {vision['b1_graph_ms']:.2f} ms |")
    lines.append(f"| JPEG decode + CLIP preprocessing, CPU (the product's code), one core | latency | {cpu['one_core_ms_per_image']:.1f} ms an image |")
    for key, what in (
        ("float32", "float32 pixels sent back (the reindex pool before)"),
        ("uint8", "uint8 crops sent back, the parent normalizes (the reindex pool now)"),
        ("kept", "nothing sent back (the pipe left out)"),
    ):
        lines.append(f"| the same on {cpu['workers']} processes, {what} | throughput | {cpu[f'{key}_images_per_s']:,.0f} img/s |")
    if "gpu_decode" in report:
        gpu = report["gpu_decode"]
        lines.append(f"| nvJPEG decode on the GPU, batch {gpu['batch']} | throughput | {gpu['decode_images_per_s']:,.0f} img/s |")
        lines.append(f"| nvJPEG decode + preprocessing on the GPU | throughput | {gpu['decode_preprocess_images_per_s']:,.0f} img/s |")
        lines.append(f"| JPEG bytes → embeddings, all on the GPU | throughput | {gpu['jpeg_to_embedding_images_per_s']:,.0f} img/s |")
    parity = report["parity"]
    checks = [f"{report['dtype']} against fp32 embeddings: min cosine {parity['text_min_cos']:.5f} (text), {parity['vision_min_cos']:.5f} (vision)"]
    graph_cos = [text[k] for k in text if k.endswith("_graph_vs_eager_cos")]
    if graph_cos:
        checks.append(f"CUDA graph against eager: min cosine {min(graph_cos):.5f}")
    if "gpu_decode" in report:
        gpu = report["gpu_decode"]
        checks.append(
            f"GPU against CPU preprocessing: mean |Δpixel| {gpu['pixels_mean_abs_diff']:.4f} (normalized units), "
            f"embedding min cosine {gpu['embedding_min_cos']:.5f}"
        )
    lines += ["", "Checks in the same run: " + "; ".join(checks) + "."]
    lines += gpu_onnx.render(report.get("onnx"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke run")
    parser.add_argument("--tiny", action="store_true", help="a small model instead of ViT-B/32 (smoke runs)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per batch-1 figure (a quarter for batched ones)")
    parser.add_argument("--images", type=int, default=256, help="photo-like 640×480 JPEGs to decode")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--render", type=Path, help="rewrite the docs section from this JSON instead of measuring")
    parser.add_argument("--no-onnx", action="store_true", help="leave out the ONNX towers through onnxruntime-gpu (bench.gpu_onnx)")
    parser.add_argument("--check", action="store_true", help="only check that a CUDA GPU is visible to PyTorch, and exit")
    args = parser.parse_args()
    if args.render:
        publish_docs(json.loads(args.render.read_text()), START, END, render)
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible to PyTorch here; run this on a GPU host, or pass --device cpu --tiny for a smoke run")
    if args.check:
        print(f"CUDA GPU: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"device {device.type}: nothing to check")
        return
    with tempfile.TemporaryDirectory() as work:
        report = measure(device, args.tiny, args.repeats, args.images, Path(work))
        if not args.no_onnx:
            report["onnx"] = gpu_onnx.onnx_towers(device.type, args.tiny, args.repeats, Path(work))
    publish(report, args.out, "-gpu", START, END, render)


if __name__ == "__main__":
    main()
