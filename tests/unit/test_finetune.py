"""FLYP fine-tuning: the loss (with hard negatives), the schedule, the captions file, augmentation, the pixel cache, and an exact resume."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch

import relevance.finetune
from core.errors import UserError
from inference.images import PreprocessConfig, load_pixels
from inference.tokenizer import ClipTokenizer
from relevance.augment import augment, jitter, rescale, symmetry
from relevance.config import TrainConfig, add_arguments, config_from
from relevance.finetune import STATE, Batches, Pair, _hard_negatives, contrastive_loss, finetune, lr_factor, read_captions
from relevance.shapes import generate

pytestmark = pytest.mark.torch  # fine-tuning runs torch


def test_identical_captions_are_positives_not_negatives() -> None:
    # Which image got which copy of a repeated caption must not matter: both are right answers.
    # (The two copies embed differently here, as they do under dropout or prompt augmentation.)
    images = torch.eye(2)
    matched, swapped = torch.eye(2), torch.eye(2)[[1, 0]]
    scale = torch.tensor(math.log(20.0))
    same = ["two red circles", "two red circles"]
    assert float(contrastive_loss(images, swapped, scale, same)) == pytest.approx(float(contrastive_loss(images, matched, scale, same)))
    # Treated as negatives (two different captions), the swapped pairing is heavily penalized.
    different = ["two red circles", "a blue square"]
    assert float(contrastive_loss(images, swapped, scale, different)) > float(contrastive_loss(images, matched, scale, different)) + 10
    # The targets of a repeated caption are spread evenly over its images.
    logits = scale.exp() * matched @ images.t()
    even = torch.full((2, 2), 0.5)
    expected = (torch.nn.functional.cross_entropy(logits, even) + torch.nn.functional.cross_entropy(logits.t(), even)) / 2
    assert float(contrastive_loss(images, matched, scale, same)) == pytest.approx(float(expected))


def test_loss_is_symmetric_and_low_for_matching_pairs() -> None:
    torch.manual_seed(0)
    embeds = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(math.log(100.0))
    matched = contrastive_loss(embeds, embeds, scale, ["a", "b", "c", "d"])
    shuffled = contrastive_loss(embeds, embeds[[1, 0, 3, 2]], scale, ["a", "b", "c", "d"])
    assert float(matched) < 0.5 < float(shuffled)


def old_contrastive_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
    """The loss as it was before hard negatives (commit 8fe8133), copied."""
    image_embeds = torch.nn.functional.normalize(image_embeds, dim=-1)
    text_embeds = torch.nn.functional.normalize(text_embeds, dim=-1)
    logits = logit_scale.exp() * text_embeds @ image_embeds.t()
    index = {caption: n for n, caption in enumerate(dict.fromkeys(captions))}
    keys = torch.tensor([index[caption] for caption in captions])
    same = (keys[:, None] == keys[None, :]).to(logits.dtype)
    targets = same / same.sum(dim=1, keepdim=True)
    return (torch.nn.functional.cross_entropy(logits, targets) + torch.nn.functional.cross_entropy(logits.t(), targets)) / 2


CAPTIONS = ["two red circles", "a blue square", "two red circles", "a green triangle", "a red circle and a blue square", "a yellow circle"]


def test_without_negatives_the_loss_is_the_old_one() -> None:
    torch.manual_seed(1)
    images, texts, scale = torch.randn(6, 16), torch.randn(6, 16), torch.tensor(math.log(30.0))
    old = old_contrastive_loss(images, texts, scale, CAPTIONS)
    assert torch.equal(contrastive_loss(images, texts, scale, CAPTIONS), old)
    assert torch.equal(contrastive_loss(images, texts, scale, CAPTIONS, torch.randn(0, 16), []), old)
    # A negative that is a caption of the batch ("a blue square", right for image 1) is left out.
    assert torch.equal(contrastive_loss(images, texts, scale, CAPTIONS, images[1:2].clone(), ["a blue square"]), old)
    with pytest.raises(ValueError, match="2 negative embeddings but 1"):
        contrastive_loss(images, texts, scale, CAPTIONS, torch.randn(2, 16), ["x"])


def test_hard_negatives_are_only_ever_wrong_answers() -> None:
    torch.manual_seed(2)
    images, texts, scale = torch.randn(6, 16), torch.randn(6, 16), torch.tensor(math.log(30.0))
    negatives = torch.randn(3, 16)
    names = ["three red circles", "a red square and a blue circle", "two green triangles"]
    loss = contrastive_loss(images, texts, scale, CAPTIONS, negatives, names)
    # The loss is text→image over the positives as before, and image→text with every negative a column of target 0.
    normalized = [torch.nn.functional.normalize(x, dim=-1) for x in (images, texts, negatives)]
    logits = scale.exp() * normalized[1] @ normalized[0].t()
    wide = torch.cat([logits.t(), scale.exp() * normalized[0] @ normalized[2].t()], dim=1)
    same = torch.tensor([[a == b for b in CAPTIONS] for a in CAPTIONS], dtype=torch.float32)
    targets = same / same.sum(dim=1, keepdim=True)
    expected = (
        torch.nn.functional.cross_entropy(logits, targets) + torch.nn.functional.cross_entropy(wide, torch.cat([targets, torch.zeros(6, 3)], dim=1))
    ) / 2
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    # With any target mass on a negative column, a negative that scores far below every image would cost
    # without bound; with none, it costs nothing (the test below).


def test_a_negative_that_scores_high_for_its_image_raises_the_loss_a_low_one_barely_does() -> None:
    images = torch.eye(4)
    texts, scale, captions = torch.eye(4), torch.tensor(math.log(50.0)), ["a", "b", "c", "d"]
    plain = float(contrastive_loss(images, texts, scale, captions))
    high = float(contrastive_loss(images, texts, scale, captions, images[:1] + 0.01, ["not a"]))
    low = float(contrastive_loss(images, texts, scale, captions, -images[:1], ["not a"]))
    assert high > plain + 0.05 and abs(low - plain) < 1e-6


def test_a_negative_counts_only_for_the_images_it_is_marked_for() -> None:
    torch.manual_seed(3)
    images, texts, scale = torch.randn(6, 16), torch.randn(6, 16), torch.tensor(math.log(30.0))
    negatives = images[:2].clone().requires_grad_(True)  # each scores highest for its own image
    names = ["three red circles", "a red square and a blue circle"]
    old = old_contrastive_loss(images, texts, scale, CAPTIONS)
    nowhere = torch.zeros(6, 2, dtype=torch.bool)
    assert float(contrastive_loss(images, texts, scale, CAPTIONS, negatives, names, nowhere).detach()) == pytest.approx(float(old), rel=1e-6)
    own = torch.eye(6, 2, dtype=torch.bool)  # negative 0 for image 0, negative 1 for image 1
    loss = contrastive_loss(images, texts, scale, CAPTIONS, negatives, names, own)
    normalized = [torch.nn.functional.normalize(x, dim=-1) for x in (images, texts, negatives.detach())]
    logits = scale.exp() * normalized[1] @ normalized[0].t()
    wide = torch.cat([logits.t(), (scale.exp() * normalized[0] @ normalized[2].t()).masked_fill(~own, -1e4)], dim=1)
    same = torch.tensor([[a == b for b in CAPTIONS] for a in CAPTIONS], dtype=torch.float32)
    targets = same / same.sum(dim=1, keepdim=True)
    i2t = torch.nn.functional.cross_entropy(wide, torch.cat([targets, torch.zeros(6, 2)], dim=1))
    assert float(loss.detach()) == pytest.approx(float((torch.nn.functional.cross_entropy(logits, targets) + i2t) / 2), rel=1e-6)
    assert float(loss.detach()) > float(old) + 0.1
    loss.backward()
    assert negatives.grad is not None and bool(torch.isfinite(negatives.grad).all())


def test_the_hard_negatives_of_a_run_are_captions_of_its_training_set() -> None:
    train = [
        Pair("a.png", ["a red circle and a blue square", "a blue square and a red circle"]),
        Pair("b.png", ["a red circle and a green square", "a green square and a red circle"]),
        Pair("c.png", ["two red circles", "red, circle"]),
    ]
    picks = [pair.captions[0] for pair in train]
    negatives = _hard_negatives(train, np.arange(3), picks, np.random.default_rng(0))
    # The swaps (a blue circle and a red square, ...) are no caption here: a recolouring that is one stands in.
    assert negatives == ["a red circle and a green square", "a red circle and a blue square", None]


def test_the_flags_reach_the_saved_settings() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    required = ["--captions", "c.csv", "--images", "i", "--out", "o"]
    assert config_from(parser.parse_args([*required, "--hard-negatives", "--augment"])) == TrainConfig(hard_negatives=True, augment=True)
    assert config_from(parser.parse_args(required)) == TrainConfig()


def test_warmup_then_cosine() -> None:
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0)


def test_captions_file_errors_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    path = tmp_path / "captions.csv"
    path.write_text("file,text\na.png,hello\n")
    with pytest.raises(UserError, match="missing: caption"):
        read_captions(path, tmp_path)
    path.write_text("file,caption,source\na.png,one,x\na.png,two,y\nb.png,three,z\n")
    with pytest.raises(UserError, match=r"1 files .* not under .*b\.png"):
        read_captions(path, tmp_path)
    path.write_text("file,caption\na.png,one\na.png,two\n")
    [pair] = read_captions(path, tmp_path)
    assert pair.captions == ["one", "two"]


class Killed(Exception):
    pass


def _stop_after_first(record: Mapping[str, object]) -> None:
    if record["epoch"] == 1:
        raise Killed


def _epochs(history: Mapping[str, object]) -> list[dict[str, float]]:
    """The per-epoch records of a ``finetune`` history (typed ``object`` there)."""
    return cast(list[dict[str, float]], history["epochs"])


def test_a_resumed_run_ends_with_the_same_weights(tmp_path: Path) -> None:
    generate(tmp_path / "data", 48, seed=3)
    config = TrainConfig(base="small", epochs=2, batch_size=16, lr=1e-3, warmup_steps=2, val_fraction=0.25)
    args = (tmp_path / "data" / "captions.csv", tmp_path / "data" / "images")
    straight = finetune(*args, tmp_path / "straight", config, progress=False, device="cpu")
    with pytest.raises(Killed):  # killed after the first epoch's checkpoint
        finetune(*args, tmp_path / "resumed", config, progress=False, device="cpu", on_epoch=_stop_after_first)
    assert torch.load(tmp_path / "resumed" / STATE, weights_only=False)["epoch"] == 1
    resumed = finetune(*args, tmp_path / "resumed", config, resume=True, progress=False, device="cpu")
    assert [e["loss"] for e in _epochs(resumed)] == [e["loss"] for e in _epochs(straight)]
    a = torch.load(tmp_path / "straight" / STATE, weights_only=False)["model"]
    b = torch.load(tmp_path / "resumed" / STATE, weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    assert _epochs(straight)[1]["loss"] < _epochs(straight)[0]["loss"]
    # The output folder is a CLIPModel that export loads as it is.
    assert (tmp_path / "resumed" / "config.json").is_file() and (tmp_path / "resumed" / "tokenizer.json").is_file()
    with pytest.raises(UserError, match="resume with the same settings"):
        finetune(*args, tmp_path / "straight", TrainConfig(**{**config.__dict__, "lr": 2e-3}), resume=True, progress=False, device="cpu")


SHAPES_64 = PreprocessConfig(shortest_edge=64, crop_size=64)  # the shapes images as they are, as the small model sees them


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    generate(out, 8, seed=4)
    return out


def shapes_pixels(shapes_set: Path) -> torch.Tensor:
    files = sorted((shapes_set / "images").rglob("*.png"))
    return torch.from_numpy(np.stack([load_pixels(f.read_bytes(), SHAPES_64) for f in files]))


def test_turns_and_flips_keep_every_pixel_value_and_make_eight_pictures(shapes_set: Path) -> None:
    pixels = shapes_pixels(shapes_set)[:1].expand(8, -1, -1, -1)
    turned = symmetry(pixels, np.arange(8))
    values = torch.sort(pixels.flatten(2), dim=-1).values
    assert torch.equal(torch.sort(turned.flatten(2), dim=-1).values, values)  # the same values, moved
    assert len({turned[i].numpy().tobytes() for i in range(8)}) == 8  # the eight symmetries of the square
    assert torch.equal(turned[0], pixels[0]) and torch.equal(turned[4], pixels[0].flip(-1))


def test_shrinking_keeps_the_whole_picture_in_the_frame(shapes_set: Path) -> None:
    unit = shapes_pixels(shapes_set)[:1] * torch.tensor(SHAPES_64.std)[:, None, None] + torch.tensor(SHAPES_64.mean)[:, None, None]
    corners = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1], [0, 0]], dtype=float)
    scales = np.full(5, 0.75)
    shrunk = rescale(unit.expand(5, -1, -1, -1), scales, corners * 0.25)  # pushed as far as it may go, each way
    border = torch.cat([unit[..., 0, :], unit[..., -1, :], unit[..., :, 0], unit[..., :, -1]], dim=-1).mean(dim=-1)[..., None, None]
    ink = (unit - border).abs().sum()  # what differs from the background: the objects
    for image in shrunk:
        assert float((image - border[0]).abs().sum()) == pytest.approx(float(ink) * 0.75**2, rel=0.08)  # all of it, smaller
    assert torch.allclose(rescale(unit, np.ones(1), np.zeros((1, 2))), unit, atol=1e-5)


def test_jitter_moves_brightness_and_contrast_alike_on_every_channel(shapes_set: Path) -> None:
    pixels = shapes_pixels(shapes_set)
    mean, std = torch.tensor(SHAPES_64.mean)[:, None, None], torch.tensor(SHAPES_64.std)[:, None, None]
    brightness, contrast = np.linspace(-0.1, 0.1, len(pixels)), np.linspace(0.8, 1.2, len(pixels))
    unit = pixels * std + mean  # the same, written out on values in [0, 1]
    level = unit.mean(dim=(1, 2, 3), keepdim=True)
    c, b = torch.tensor(contrast, dtype=torch.float32)[:, None, None, None], torch.tensor(brightness, dtype=torch.float32)[:, None, None, None]
    expected = (((unit - level) * c + level + b).clamp(0, 1) - mean) / std
    assert torch.allclose(jitter(pixels, brightness, contrast, SHAPES_64), expected, atol=1e-5)
    assert torch.allclose(jitter(pixels, np.zeros(len(pixels)), np.ones(len(pixels)), SHAPES_64), pixels, atol=1e-5)


def test_augmentation_is_seeded_and_keeps_values_in_range(shapes_set: Path) -> None:
    pixels = shapes_pixels(shapes_set)
    first = augment(pixels, np.random.default_rng([0, 1, 0]), SHAPES_64)
    assert torch.equal(first, augment(pixels, np.random.default_rng([0, 1, 0]), SHAPES_64))
    assert not torch.equal(first, augment(pixels, np.random.default_rng([0, 1, 8]), SHAPES_64))
    assert first.shape == pixels.shape and not torch.equal(first, pixels)
    lowest = (0 - torch.tensor(SHAPES_64.mean)) / torch.tensor(SHAPES_64.std)
    highest = (1 - torch.tensor(SHAPES_64.mean)) / torch.tensor(SHAPES_64.std)
    per_channel = first.transpose(0, 1).flatten(1)
    assert bool((per_channel.min(dim=1).values >= lowest - 1e-5).all() and (per_channel.max(dim=1).values <= highest + 1e-5).all())


def test_pixels_are_decoded_once_and_equal_the_serving_path(shapes_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = shapes_set / "images"
    files = [str(f.relative_to(images)) for f in sorted(images.rglob("*.png"))]
    reads: list[bytes] = []
    original = relevance.finetune.load_crop

    def counted(data: bytes, *rest: Any) -> np.ndarray:
        reads.append(data)
        return original(data, *rest)

    monkeypatch.setattr(relevance.finetune, "load_crop", counted)
    batches = Batches(images, cast(ClipTokenizer, None), SHAPES_64)  # no tokens asked for
    expected = torch.from_numpy(np.stack([load_pixels((images / f).read_bytes(), SHAPES_64) for f in files]))
    assert torch.equal(batches.pixels(files), expected) and torch.equal(batches.pixels(files[::-1]), expected.flip(0))
    assert len(reads) == len(files)  # the second pass came from memory
    capped = Batches(images, cast(ClipTokenizer, None), SHAPES_64, cache_bytes=3 * 64 * 64 * 3)  # room for three crops
    reads.clear()
    assert torch.equal(capped.pixels(files), expected) and torch.equal(capped.pixels(files), expected)
    assert len(reads) == 2 * len(files) - 3 and len(capped.crops) == 3


def test_a_run_with_hard_negatives_and_augmentation_trains_saves_and_augments_only_training_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate(tmp_path / "data", 24, seed=3)
    augmented: list[int] = []
    negatives: list[int] = []
    original_augment, original_loss = relevance.finetune.augment, relevance.finetune.contrastive_loss

    def spy_augment(pixels: torch.Tensor, *rest: Any) -> torch.Tensor:
        augmented.append(len(pixels))
        return original_augment(pixels, *rest)

    def spy_loss(*args: Any) -> torch.Tensor:
        negatives.append(0 if args[4] is None else len(args[4]))
        made_for = args[6]
        if args[4] is not None:  # each negative is scored against the image it was made for, each image has at most one
            assert bool((made_for.sum(dim=0) >= 1).all()) and bool((made_for.sum(dim=1) <= 1).all())
        return original_loss(*args)

    monkeypatch.setattr(relevance.finetune, "augment", spy_augment)
    monkeypatch.setattr(relevance.finetune, "contrastive_loss", spy_loss)
    config = TrainConfig(base="tiny", epochs=2, batch_size=8, lr=1e-3, warmup_steps=1, val_fraction=0.25, hard_negatives=True, augment=True)
    args = (tmp_path / "data" / "captions.csv", tmp_path / "data" / "images")
    history = finetune(*args, tmp_path / "out", config, progress=False, device="cpu")
    assert sum(augmented) == 2 * 18 and len(augmented) == 6  # the 18 training images of both epochs; never the 6 validation images
    assert len(negatives) == 6 and sum(negatives) >= 10  # captions of the 18 training images only, so not in every step
    assert all(math.isfinite(e["loss"]) for e in _epochs(history))
    state = torch.load(tmp_path / "out" / STATE, weights_only=False)
    assert state["config"]["hard_negatives"] is True and state["config"]["augment"] is True
    assert (tmp_path / "out" / "config.json").is_file()
    with pytest.raises(UserError, match="resume with the same settings"):
        finetune(*args, tmp_path / "out", TrainConfig(**{**config.__dict__, "hard_negatives": False}), resume=True, progress=False, device="cpu")
    # A state saved before these settings existed resumes with them off.
    del state["config"]["hard_negatives"], state["config"]["augment"]
    torch.save(state, tmp_path / "out" / STATE)
    plain = TrainConfig(**{**config.__dict__, "hard_negatives": False, "augment": False})
    assert finetune(*args, tmp_path / "out", plain, resume=True, progress=False, device="cpu")["epochs"] == history["epochs"]
