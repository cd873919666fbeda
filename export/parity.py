"""Compare the exported ONNX towers with the PyTorch model on real photos and texts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from core.errors import UserError
from core.manifest import TEXT_MODEL, VISION_MODEL
from export.checkpoint import Towers
from export.samples import sample_photos
from inference.images import PreprocessConfig, decode_image, preprocess
from inference.tokenizer import ClipTokenizer

logger = logging.getLogger(__name__)

FP32_THRESHOLD = 0.9999
PARITY_TEXTS = (
    "a photo of a black dog on green grass",
    "red car",
    "two cats sleeping on a sofa",
    "an astronaut in a white space suit",
    "a cup of coffee",
    "x",
    "a very long caption " * 20,
)


class ParityError(UserError):
    """An exported tower disagrees with PyTorch beyond the allowed threshold."""


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def reference_inputs(tokenizer: ClipTokenizer, config: PreprocessConfig, images: int = 8) -> dict[str, dict[str, np.ndarray]]:
    """Token ids for the parity texts and pixel values of real sample photos."""
    tokens = tokenizer.encode(list(PARITY_TEXTS))
    photos = [decode_image(path.read_bytes()) for path in sample_photos(images)]
    return {
        TEXT_MODEL: {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask},
        VISION_MODEL: {"pixel_values": preprocess(photos, config)},
    }


def torch_embeddings(towers: Towers, inputs: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Embeddings from the PyTorch towers."""
    with torch.inference_mode():
        text = towers.text(**{k: torch.from_numpy(v) for k, v in inputs[TEXT_MODEL].items()}).text_embeds
        vision = towers.vision(pixel_values=torch.from_numpy(inputs[VISION_MODEL]["pixel_values"])).image_embeds
    return {TEXT_MODEL: text.numpy(), VISION_MODEL: vision.numpy()}


def onnx_embeddings(paths: dict[str, Path], inputs: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Embeddings from the ONNX files, run with onnxruntime on the CPU."""
    result = {}
    for model, path in paths.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        result[model] = session.run(None, inputs[model])[0]
    return result


def check_parity(reference: dict[str, np.ndarray], exported: dict[str, np.ndarray], threshold: float | None) -> dict[str, float]:
    """Minimum cosine similarity per tower; raises ``ParityError`` below ``threshold`` (if given)."""
    report = {model: _cosine_min(reference[model], exported[model]) for model in reference}
    for model, value in report.items():
        logger.info("parity %s: min cosine %.6f", model, value)
        if threshold is not None and not value >= threshold:  # a NaN is below every threshold
            raise ParityError(f"{model}: min cosine similarity to PyTorch is {value:.6f}, below {threshold}")
    return report
