"""``make bench-floor``: what the models cost on this CPU with onnxruntime alone, before any serving.

These are the floors the end-to-end targets are measured against: the GEMM rate of the cores
(fp32 and int8), the text tower at batch 1 by query length and batched (its queries/s ceiling),
and the vision tower batched (its img/s ceiling). Same ``model.onnx`` files as the stack, same
thread count (2). Writes ``bench/results/<date>-<host>-floor.json`` and the table between the
``floor`` markers in ``docs/benchmarks.md``. Nothing here is a test assertion.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from bench.report import measured, publish, run_header, simd_flags
from bench.run import ROOT, ensure_repo
from core.logs import configure_logging
from core.manifest import TEXT_MODEL, VISION_MODEL, Manifest

START, END = "<!-- floor:start -->", "<!-- floor:end -->"
THREADS = 2


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def median_ms(run: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1000)


def gemm_rate(work: Path, m: int = 400, k: int = 768, n: int = 3072) -> dict[str, float]:
    """G(FL)OP/s of one ``[m,k]x[k,n]`` MatMul (a ViT-B/32 MLP layer over 8 images) in fp32 and dynamic int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight = helper.make_tensor("w", TensorProto.FLOAT, [k, n], np.random.default_rng(0).standard_normal((k, n)).astype(np.float32).flatten())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, work / "gemm.onnx")
    quantize_dynamic(work / "gemm.onnx", work / "gemm-int8.onnx", weight_type=QuantType.QInt8)
    feed = {"x": np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)}
    result = {}
    for name, path in (("fp32", work / "gemm.onnx"), ("int8", work / "gemm-int8.onnx")):
        gemm = session(path)
        result[f"{name}_gflops"] = 2 * m * k * n / (median_ms(lambda: gemm.run(None, feed), 30) / 1000) / 1e9
    return result


def text_tower(path: Path) -> dict[str, float]:
    tower = session(path)
    rng = np.random.default_rng(0)
    result = {}
    for batch, length in ((1, 8), (1, 12), (1, 16), (1, 77), (16, 12)):
        ids = rng.integers(1, 40000, (batch, length)).astype(np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        result[f"b{batch}_len{length}_ms"] = median_ms(lambda: tower.run(None, feed), 30 if batch == 1 else 10)
    result["queries_per_s_ceiling"] = 16 / (result["b16_len12_ms"] / 1000)
    return result


def vision_tower(path: Path) -> dict[str, float]:
    tower = session(path)
    rng = np.random.default_rng(0)
    result = {}
    for batch in (1, 8):
        feed = {"pixel_values": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
        result[f"b{batch}_ms"] = median_ms(lambda: tower.run(None, feed), 10 if batch == 1 else 5, warmup=2)
    result["images_per_s_ceiling"] = 8 / (result["b8_ms"] / 1000)
    return result


def render(report: dict[str, Any]) -> str:
    gemm, towers = report["gemm"], report["towers"]
    lines = [
        f"{measured(report)}, onnxruntime {report['onnxruntime']}, {THREADS} threads. Raw data: `{report['path']}`.",
        "",
        f"- GEMM rate (one 400×768×3072 MatMul, a ViT-B/32 MLP layer over 8 images): fp32 {gemm['fp32_gflops']:.0f} GFLOP/s, "
        f"dynamic int8 {gemm['int8_gflops']:.0f} GOP/s ({gemm['int8_gflops'] / gemm['fp32_gflops']:.2f}× fp32). "
        f"CPU vector extensions: {', '.join(report['simd']) or 'none of avx2/avx512/vnni'}"
        f"{'' if any('vnni' in f or 'amx' in f for f in report['simd']) else ' (no VNNI or AMX: int8 GEMM runs no faster than fp32)'}.",
        "",
        "| tower | precision | batch 1 | batched | ceiling |",
        "| --- | --- | --- | --- | --- |",
    ]
    for precision, tower in towers.items():
        text, vision = tower["text"], tower["vision"]
        lines.append(
            f"| text | {precision} | {text['b1_len8_ms']:.1f} / {text['b1_len12_ms']:.1f} / {text['b1_len16_ms']:.1f} / {text['b1_len77_ms']:.1f} ms "
            f"(8 / 12 / 16 / 77 tokens) | {text['b16_len12_ms']:.0f} ms for 16 × 12 tokens | {text['queries_per_s_ceiling']:.0f} queries/s |"
        )
        lines.append(
            f"| vision | {precision} | {vision['b1_ms']:.0f} ms | {vision['b8_ms']:.0f} ms for 8 images | {vision['images_per_s_ceiling']:.1f} img/s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench", help="where the exported repositories are cached")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    configure_logging("WARNING")
    repos = {p: ensure_repo(args.data / f"repo-{p}", p) for p in ("fp32", "int8")}
    parameters = {"threads": THREADS, "gemm": [400, 768, 3072], "text_shapes": ["1x8", "1x12", "1x16", "1x77", "16x12"], "vision_batches": [1, 8]}
    report: dict[str, Any] = {**run_header(parameters=parameters), "onnxruntime": ort.__version__, "simd": simd_flags(), "towers": {}}
    with tempfile.TemporaryDirectory() as work:
        report["gemm"] = gemm_rate(Path(work))
    for precision, repo in repos.items():
        manifest = Manifest.read(repo)
        report["towers"][precision] = {
            "text": text_tower(manifest.version_dir(repo, TEXT_MODEL) / "model.onnx"),
            "vision": vision_tower(manifest.version_dir(repo, VISION_MODEL) / "model.onnx"),
        }
    publish(report, args.out, "-floor", START, END, render)


if __name__ == "__main__":
    main()
