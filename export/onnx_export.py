"""Export CLIP's towers to ONNX with ``optimum`` and lay out a Triton model repository."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import torch
from optimum.exporters.onnx import export as onnx_export
from optimum.exporters.onnx.model_configs import CLIPTextWithProjectionOnnxConfig, CLIPVisionModelOnnxConfig

from core.manifest import PRECISIONS, TEXT_MODEL, VISION_MODEL
from export.checkpoint import Towers

logger = logging.getLogger(__name__)

OPSET = 17
# The python-backend model (CPU configs) at the root of the template repository; copied as model.py.
PYTHON_MODEL_FILE = "python_model.py"


class TextEmbedsOnnxConfig(CLIPTextWithProjectionOnnxConfig):
    """``input_ids``, ``attention_mask`` → ``text_embeds``, dynamic batch and sequence length."""

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return {
            "input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "sequence_length"},
        }

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return {"text_embeds": {0: "batch_size"}}


class ImageEmbedsOnnxConfig(CLIPVisionModelOnnxConfig):
    """``pixel_values`` → ``image_embeds`` (the stock config declares outputs the model lacks)."""

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return {"pixel_values": {0: "batch_size"}}

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return {"image_embeds": {0: "batch_size"}}


def export_fp32(towers: Towers, work: Path) -> dict[str, Path]:
    """Export both towers in fp32 into ``work/<model>.onnx``."""
    work.mkdir(parents=True, exist_ok=True)
    paths = {TEXT_MODEL: work / f"{TEXT_MODEL}.onnx", VISION_MODEL: work / f"{VISION_MODEL}.onnx"}
    text_config = TextEmbedsOnnxConfig(towers.text.config, task="feature-extraction")
    vision_config = ImageEmbedsOnnxConfig(towers.vision.config, task="feature-extraction")
    with warnings.catch_warnings():  # the tracer's notes on CLIP's shape checks are expected and harmless
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index")
        onnx_export(towers.text, text_config, paths[TEXT_MODEL], opset=OPSET)
        onnx_export(towers.vision, vision_config, paths[VISION_MODEL], opset=OPSET)
    return paths


def convert_precision(src: Path, dst: Path, precision: str) -> None:
    """Write ``src`` at ``precision`` to ``dst`` (int8: dynamic quantization of MatMul/Gemm)."""
    if precision == "fp32":
        shutil.copyfile(src, dst)
    elif precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    elif precision == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(model, str(dst))
    else:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def layout_repository(out: Path, template: Path, version: int) -> None:
    """Copy the committed configs (``config.pbtxt``, ``configs/``) and the python wrapper into ``out``.

    Raises:
        FileNotFoundError: ``template`` is not a model repository with this project's configs.
    """
    wrapper = template / PYTHON_MODEL_FILE
    if not wrapper.is_file():
        raise FileNotFoundError(
            f"{wrapper} not found: the template model repository holds the committed Triton configs; run from the project root or set T2I_MODEL_TEMPLATE"
        )
    for model in (TEXT_MODEL, VISION_MODEL):
        target = out / model
        (target / str(version)).mkdir(parents=True, exist_ok=True)
        if template.resolve() != out.resolve():
            shutil.copyfile(template / model / "config.pbtxt", target / "config.pbtxt")
            shutil.copytree(template / model / "configs", target / "configs", dirs_exist_ok=True)
        shutil.copyfile(wrapper, target / str(version) / "model.py")
