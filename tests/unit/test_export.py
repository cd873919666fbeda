"""ONNX export: repository layout, manifest, parity, local checkpoints and the offline error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

from core.manifest import Manifest
from export.checkpoint import HubUnreachable, load_towers, random_configs
from export.main import run_export
from export.parity import FP32_THRESHOLD

pytestmark = pytest.mark.torch  # the export: torch, transformers, optimum and onnx


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repo")
    run_export("tiny", out)
    return out


def test_repository_layout(tiny_repo: Path) -> None:
    for model in ("clip_text", "clip_vision"):
        config = (tiny_repo / model / "config.pbtxt").read_text()
        assert re.search(rf'name: "{model}"', config) and 'backend: "onnxruntime"' in config and "KIND_GPU" in config
        cpu = (tiny_repo / model / "configs" / "cpu.pbtxt").read_text()
        assert f'name: "{model}"' in cpu and 'backend: "python"' in cpu
        assert (tiny_repo / model / "1" / "model.onnx").is_file() and (tiny_repo / model / "1" / "model.py").is_file()
    assert (tiny_repo / "clip_text" / "1" / "tokenizer.json").is_file()
    assert json.loads((tiny_repo / "clip_vision" / "1" / "preprocessor_config.json").read_text())["crop_size"]["height"] == 224


def test_onnx_signatures_are_dynamic(tiny_repo: Path) -> None:
    text = onnx.load(str(tiny_repo / "clip_text" / "1" / "model.onnx"))
    assert [i.name for i in text.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in text.graph.output] == ["text_embeds"]
    dims = [d.dim_param or d.dim_value for d in text.graph.input[0].type.tensor_type.shape.dim]
    assert len(dims) == 2 and all(isinstance(d, str) for d in dims), dims  # batch and sequence length are both dynamic
    vision = onnx.load(str(tiny_repo / "clip_vision" / "1" / "model.onnx"))
    assert [i.name for i in vision.graph.input] == ["pixel_values"] and [o.name for o in vision.graph.output] == ["image_embeds"]


def test_manifest(tiny_repo: Path) -> None:
    manifest = Manifest.read(tiny_repo)
    assert manifest.model_id == "random:tiny" and manifest.random_weights
    assert manifest.dimension == 32 and manifest.context_length == 77 and manifest.image_size == 224
    assert manifest.checksum == load_towers("tiny").checksum()  # deterministic random weights
    assert min(manifest.parity.values()) >= FP32_THRESHOLD


def test_int8_reports_parity(tmp_path: Path, tiny_repo: Path) -> None:
    manifest = run_export("tiny", tmp_path, precision="int8")
    assert set(manifest.parity) == {"clip_text_fp32", "clip_vision_fp32", "clip_text_int8", "clip_vision_int8"}
    assert 0.9 < manifest.parity["clip_text_int8"] <= 1.0 + 1e-6
    assert manifest.precision == "int8"
    for model in ("clip_text", "clip_vision"):  # quantized weights take less space than fp32
        assert (tmp_path / model / "1" / "model.onnx").stat().st_size < (tiny_repo / model / "1" / "model.onnx").stat().st_size


def test_export_writes_the_models_warmup(tmp_path: Path) -> None:
    # "small" is the shapes model's architecture (32 tokens, 64 px); the committed configs carry ViT-B/32's warm-up (77, 224).
    manifest = run_export("small", tmp_path)
    assert (manifest.context_length, manifest.image_size) == (32, 64)
    for name in ("config.pbtxt", "configs/cpu.pbtxt"):
        text = (tmp_path / "clip_text" / name).read_text()
        assert [int(n) for n in re.findall(r'key: "input_ids" value \{ data_type: TYPE_INT64 dims: \[ (\d+) \]', text)] == [8, 12, 16, 20, 24, 32]
        vision = (tmp_path / "clip_vision" / name).read_text()
        batches = [("1", "64", "64")] if name.startswith("configs/cpu") else [("1", "64", "64"), ("32", "64", "64")]  # the CPU config: one image
        assert re.findall(r"batch_size: (\d+) inputs \{ key: \"pixel_values\" value \{ data_type: TYPE_FP32 dims: \[ 3, (\d+), (\d+) \]", vision) == batches


def test_local_fine_tuned_checkpoint(tmp_path: Path) -> None:
    text_config, vision_config = random_configs("tiny")
    torch.manual_seed(7)
    model = CLIPModel(CLIPConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), projection_dim=32))
    checkpoint = tmp_path / "my-finetuned-clip"
    model.save_pretrained(str(checkpoint))
    CLIPImageProcessor().save_pretrained(str(checkpoint))
    manifest = run_export(str(checkpoint), tmp_path / "repo")
    assert manifest.model_id == str(checkpoint.resolve()) and not manifest.random_weights
    assert manifest.checksum != load_towers("tiny").checksum()
    towers = load_towers(str(checkpoint))
    torch.testing.assert_close(towers.text.text_projection.weight, model.text_projection.weight)
    torch.testing.assert_close(towers.vision.visual_projection.weight, model.visual_projection.weight)
    assert min(manifest.parity.values()) >= FP32_THRESHOLD


def test_folder_without_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_towers(str(tmp_path))


def test_offline_hub_id_fails_fast_and_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachable, match="unreachable"):
        load_towers("openai/clip-vit-base-patch32-not-cached")


def test_vocabulary_tokenizer_is_used_for_random_weights(tiny_repo: Path, reference_tokenizer: CLIPTokenizerFast) -> None:
    from inference.tokenizer import ClipTokenizer

    tokenizer = ClipTokenizer(tiny_repo / "clip_text" / "1" / "tokenizer.json")
    ids = reference_tokenizer("a photo of a cat")["input_ids"]
    assert np.array_equal(tokenizer.encode(["a photo of a cat"]).input_ids[0, : len(ids)], ids)
