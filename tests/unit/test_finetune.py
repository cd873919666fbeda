"""FLYP fine-tuning: the loss, the schedule, the captions file, and an exact resume."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

from core.errors import UserError
from relevance.config import TrainConfig
from relevance.finetune import STATE, contrastive_loss, finetune, lr_factor, read_captions
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


def test_a_resumed_run_ends_with_the_same_weights(tmp_path: Path) -> None:
    generate(tmp_path / "data", 48, seed=3)
    config = TrainConfig(base="small", epochs=2, batch_size=16, lr=1e-3, warmup_steps=2, val_fraction=0.25)
    args = (tmp_path / "data" / "captions.csv", tmp_path / "data" / "images")
    straight = finetune(*args, tmp_path / "straight", config, progress=False, device="cpu")
    with pytest.raises(Killed):  # killed after the first epoch's checkpoint
        finetune(*args, tmp_path / "resumed", config, progress=False, device="cpu", on_epoch=_stop_after_first)
    assert torch.load(tmp_path / "resumed" / STATE, weights_only=False)["epoch"] == 1
    resumed = finetune(*args, tmp_path / "resumed", config, resume=True, progress=False, device="cpu")
    assert [e["loss"] for e in resumed["epochs"]] == [e["loss"] for e in straight["epochs"]]  # type: ignore[attr-defined]
    a = torch.load(tmp_path / "straight" / STATE, weights_only=False)["model"]
    b = torch.load(tmp_path / "resumed" / STATE, weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    assert straight["epochs"][1]["loss"] < straight["epochs"][0]["loss"]  # type: ignore[index]
    # The output folder is a CLIPModel that export loads as it is.
    assert (tmp_path / "resumed" / "config.json").is_file() and (tmp_path / "resumed" / "tokenizer.json").is_file()
    with pytest.raises(UserError, match="resume with the same settings"):
        finetune(*args, tmp_path / "straight", TrainConfig(**{**config.__dict__, "lr": 2e-3}), resume=True, progress=False, device="cpu")
