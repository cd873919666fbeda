"""The shipped shapes model's storage: the seeded token table, pack and materialize (``relevance.shipped``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import CLIPModel

from core.errors import UserError
from relevance import shipped

pytestmark = pytest.mark.torch


def test_the_token_table_is_the_same_numbers_for_a_seed_and_differs_across_seeds() -> None:
    first, again, other = shipped.token_table(0, 300, 8), shipped.token_table(0, 300, 8), shipped.token_table(1, 300, 8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert abs(float(first.std()) - shipped.TABLE_STD) < 0.003
    # NumPy's PCG64 stream, pinned: a NumPy that draws other numbers fails here first, not in a user's materialize.
    assert shipped.table_digest(first)[:16] == PINNED_DIGEST


PINNED_DIGEST = "88d09d61d293039f"


def _trained(tmp_path: Path) -> Path:
    """A tiny seeded start with every tensor but the token table changed, as training leaves it."""
    folder = shipped.initial_model(tmp_path / "init", "tiny", seed=3)
    model = CLIPModel.from_pretrained(str(folder))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name != shipped.FROZEN:
                parameter.add_(0.01)
    model.save_pretrained(str(tmp_path / "trained"))
    return tmp_path / "trained"


def test_pack_then_materialize_gives_the_trained_weights_back_at_fp16_precision(tmp_path: Path) -> None:
    trained = _trained(tmp_path)
    recipe = shipped.pack(trained, tmp_path / "packed", {"command": "test"}, table_seed=3)
    assert recipe["token_table"]["seed"] == 3 and recipe["command"] == "test"
    stored = (tmp_path / "packed" / shipped.WEIGHTS).stat().st_size
    full = sum(t.numel() * 4 for t in CLIPModel.from_pretrained(str(trained)).state_dict().values())
    assert stored < full / 2  # fp16 and no token table
    rebuilt = CLIPModel.from_pretrained(str(shipped.materialize(tmp_path / "model", tmp_path / "packed")))
    original = CLIPModel.from_pretrained(str(trained)).state_dict()
    for name, tensor in rebuilt.state_dict().items():
        exact = name == shipped.FROZEN or not original[name].is_floating_point()  # the table is rebuilt in fp32, not stored
        expected = original[name] if exact else original[name].half().float()
        assert torch.equal(tensor, expected), name
    assert (tmp_path / "model" / "tokenizer.json").is_file() and (tmp_path / "model" / "preprocessor_config.json").is_file()


def test_pack_refuses_a_model_whose_token_table_was_trained(tmp_path: Path) -> None:
    trained = _trained(tmp_path)
    model = CLIPModel.from_pretrained(str(trained))
    with torch.no_grad():
        model.text_model.embeddings.token_embedding.weight[5] += 1
    model.save_pretrained(str(trained))
    with pytest.raises(UserError, match="not the frozen one of seed 3"):
        shipped.pack(trained, tmp_path / "packed", {}, table_seed=3)


def test_materialize_refuses_damaged_weights_and_a_folder_without_a_model(tmp_path: Path) -> None:
    shipped.pack(_trained(tmp_path), tmp_path / "packed", {}, table_seed=3)
    weights = tmp_path / "packed" / shipped.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(UserError, match="damaged"):
        shipped.materialize(tmp_path / "model", tmp_path / "packed")
    with pytest.raises(UserError, match="holds no shipped model"):
        shipped.materialize(tmp_path / "model", tmp_path / "empty")


def test_materialize_rebuilds_when_the_shipped_weights_change(tmp_path: Path) -> None:
    shipped.pack(_trained(tmp_path), tmp_path / "packed", {}, table_seed=3)
    out = shipped.materialize(tmp_path / "model", tmp_path / "packed")
    first = json.loads((out / shipped.MARKER).read_text())["weights"]
    shipped.pack(shipped.initial_model(tmp_path / "other", "tiny", seed=3), tmp_path / "packed", {}, table_seed=3)
    assert json.loads((shipped.materialize(out, tmp_path / "packed") / shipped.MARKER).read_text())["weights"] != first


def test_read_recipe_names_what_an_incomplete_recipe_lacks(tmp_path: Path) -> None:
    shipped.pack(_trained(tmp_path), tmp_path / "packed", {}, table_seed=3)
    recipe = json.loads((tmp_path / "packed" / shipped.RECIPE).read_text())
    del recipe["token_table"]["sha256"], recipe["weights"]
    (tmp_path / "packed" / shipped.RECIPE).write_text(json.dumps(recipe))
    with pytest.raises(UserError, match=r"lacks token_table.sha256, weights, weights.sha256: rebuild it"):
        shipped.materialize(tmp_path / "model", tmp_path / "packed")


def test_the_committed_model_materializes_with_its_recorded_numbers(tmp_path: Path) -> None:
    recipe = shipped.read_recipe()
    assert {"eval", "shifted", "int8"} <= set(recipe["results"]) and recipe["command"].startswith("t2i shapes-demo --retrain")
    model = CLIPModel.from_pretrained(str(shipped.materialize(tmp_path / "shipped")))
    assert model.config.vision_config.patch_size == 16 and model.config.text_config.max_position_embeddings == 32


def test_a_fine_tuned_variant_is_keyed_on_its_base_so_a_retrained_base_retrains_it(tmp_path: Path) -> None:
    from t2i.shapes_demo import _base_identity

    base = shipped.initial_model(tmp_path / "init", "tiny", seed=3)
    first = _base_identity(base)
    shipped.initial_model(base, "tiny", seed=4)  # other weights in the same folder
    assert _base_identity(base) != first
    (base / "training").mkdir()
    (base / "training" / "cache-key").write_text("abc")  # trained here: its own key stands for it
    assert _base_identity(base) == "abc"


def test_ship_without_retrain_is_refused(tmp_path: Path) -> None:
    from t2i.shapes_demo import run_shapes_demo

    with pytest.raises(UserError, match="--ship writes the model that --retrain trains"):
        run_shapes_demo(tmp_path, retrain=False, ship=True)
