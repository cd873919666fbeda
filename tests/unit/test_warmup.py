"""Triton model_warmup generated from the manifest (export/warmup.py): shapes, caps, versions, the committed configs."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import tritonclient.grpc.model_config_pb2 as mc
from google.protobuf import text_format

from core.manifest import TEXT_MODEL, VISION_MODEL, Manifest
from export.onnx_export import layout_repository
from export.warmup import END, REINDEX_BATCH, START, text_lengths, warmup_block, with_warmup, write_warmup
from reindex.main import add_arguments

pytestmark = pytest.mark.torch  # export.onnx_export (the repository layout) imports torch

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "model_repository"
SHAPES = Manifest("shapes", "s" * 64, 64, "fp32", 32, 64, False)  # the shipped shapes model: 32 tokens, 64 px
VIT = Manifest("openai/clip-vit-base-patch32", "v" * 64, 512, "fp32", 77, 224, False)
CONFIGS = [TEMPLATE / model / name for model in (TEXT_MODEL, VISION_MODEL) for name in ("config.pbtxt", "configs/cpu.pbtxt")]


def parsed(path: Path) -> mc.ModelConfig:
    """The config as Triton reads it (the ModelConfig protobuf in text format): a syntax error raises."""
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def shapes_of(config: mc.ModelConfig) -> list[tuple[int, dict[str, list[int]]]]:
    return [(w.batch_size, {key: list(value.dims) for key, value in w.inputs.items()}) for w in config.model_warmup]


def laid_out(tmp_path: Path, *manifests: Manifest) -> Path:
    """A repository with the committed configs and ``manifests``' version folders (no ONNX files)."""
    repo = tmp_path / "repo"
    for manifest in manifests:
        layout_repository(repo, TEMPLATE, manifest.version)
        manifest.write_versioned(repo)
    return repo


@pytest.mark.parametrize(("manifest", "lengths"), [(SHAPES, [8, 12, 16, 20, 24, 32]), (VIT, [8, 12, 16, 20, 24, 32, 48, 64, 77])])
def test_warmup_follows_the_manifest(tmp_path: Path, manifest: Manifest, lengths: list[int]) -> None:
    repo = laid_out(tmp_path, manifest)
    changed = write_warmup(repo, manifest)
    assert len(changed) == (0 if manifest is VIT else 4)  # the committed configs carry ViT-B/32's block; the shapes model's replaces it
    for name in ("config.pbtxt", "configs/cpu.pbtxt"):
        text = parsed(repo / TEXT_MODEL / name)
        assert shapes_of(text) == [(1, {"input_ids": [n], "attention_mask": [n]}) for n in lengths]
        assert all(value.zero_data and value.data_type == mc.TYPE_INT64 for w in text.model_warmup for value in w.inputs.values())
        vision = parsed(repo / VISION_MODEL / name)
        batches = [1] if name.startswith("configs/cpu") else sorted({1, min(REINDEX_BATCH, vision.max_batch_size)})  # a CPU config: one image
        assert shapes_of(vision) == [(b, {"pixel_values": [3, manifest.image_size, manifest.image_size]}) for b in batches]
        assert all(value.data_type == mc.TYPE_FP32 for w in vision.model_warmup for value in w.inputs.values())
    assert write_warmup(repo, manifest) == []  # written once, unchanged the second time


def test_batches_are_capped_by_the_config(tmp_path: Path) -> None:
    repo = laid_out(tmp_path, SHAPES)
    path = repo / VISION_MODEL / "config.pbtxt"  # the GPU config: the CPU one warms one image only
    path.write_text(path.read_text().replace("max_batch_size: 256", "max_batch_size: 8"))
    write_warmup(repo, SHAPES)
    assert [b for b, _ in shapes_of(parsed(path))] == [1, 8]


def test_versions_with_other_shapes(tmp_path: Path) -> None:
    v1, v2 = replace(VIT, version=1), replace(SHAPES, version=2)  # a rollout to a model of 32 tokens and 64 px
    repo = laid_out(tmp_path, v1, v2)
    write_warmup(repo, v2)
    text = parsed(repo / TEXT_MODEL / "configs" / "cpu.pbtxt")
    assert max(dims["input_ids"][0] for _, dims in shapes_of(text)) == 32  # version 2 could not run 77 tokens
    vision = repo / VISION_MODEL / "configs" / "cpu.pbtxt"
    assert not parsed(vision).model_warmup and START not in vision.read_text()  # no one image size fits both


def test_block_is_replaced_not_stacked() -> None:
    base = (TEMPLATE / TEXT_MODEL / "configs" / "cpu.pbtxt").read_text()
    once = with_warmup(base, warmup_block(TEXT_MODEL, [SHAPES], 32))
    assert once.count(START) == 1 and once.count(END) == 1
    assert with_warmup(once, warmup_block(TEXT_MODEL, [SHAPES], 32)) == once
    assert with_warmup(with_warmup(once, warmup_block(TEXT_MODEL, [VIT], 32)), warmup_block(TEXT_MODEL, [SHAPES], 32)) == once
    assert START not in with_warmup(once, "")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(TEMPLATE)))
def test_committed_configs_carry_the_default_models_warmup(tmp_path: Path, path: Path) -> None:
    # 'make export' writes ViT-B/32 (77 tokens, 224 px) into the committed repository: that export leaves its configs as they are.
    model = path.relative_to(TEMPLATE).parts[0]
    text = path.read_text()
    assert with_warmup(text, warmup_block(model, [VIT], parsed(path).max_batch_size, cpu="KIND_CPU" in text)) == text
    assert parsed(path).model_warmup


def test_text_lengths_are_the_tokenizers_buckets(vocab_dir: Path) -> None:
    from inference.tokenizer import ClipTokenizer

    for context in (32, 77):
        assert text_lengths(context) == list(ClipTokenizer(vocab_dir / "fast" / "tokenizer.json", context).buckets)


def test_image_batch_is_the_reindex_default() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["folder"]).batch_size == REINDEX_BATCH


def test_template_unchanged_by_a_layout(tmp_path: Path) -> None:
    template = tmp_path / "template"
    shutil.copytree(TEMPLATE, template, ignore=shutil.ignore_patterns("[0-9]*", "manifest.json"))
    before = {p: p.read_text() for p in template.rglob("*.pbtxt")}
    repo = tmp_path / "repo"
    layout_repository(repo, template, 1)
    SHAPES.write_versioned(repo)
    write_warmup(repo, SHAPES)
    assert {p: p.read_text() for p in template.rglob("*.pbtxt")} == before
