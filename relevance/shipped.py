"""The trained shapes model that ships in the repository (``relevance/models/shapes``): how it is stored and rebuilt.

Two files, small enough to commit:

- ``model.safetensors``: every tensor of the trained ``CLIPModel`` in fp16, except the token
  embedding table. Training leaves that table frozen at its seeded start (49,408 × 128, 25 MB in
  fp32), so it is not stored: ``token_table`` rebuilds it from its seed with NumPy's PCG64
  generator, which gives the same numbers on every CPU, and its SHA-256 in the recipe proves it.
- ``recipe.json``: the architecture (``CLIPConfig``), the table's seed and digest, and what made
  the weights: the command, the data specs, the training settings and the evaluation numbers.

``initial_model`` writes the seeded starting point that training begins from, ``pack`` turns a
trained folder into the two files, and ``materialize`` turns them back into a ``CLIPModel``
folder (fp32, with the tokenizer and preprocessing) that ``t2i export --model`` takes as it is.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel

from core.errors import UserError
from export.checkpoint import random_configs
from relevance.finetune import write_companions

SHIPPED = Path(__file__).parent / "models" / "shapes"
FROZEN = "text_model.embeddings.token_embedding.weight"
FROZEN_PREFIX = "text_model.embeddings.token_embedding"
TABLE_STD = 0.02  # CLIP's initializer range for the token embedding
WEIGHTS, RECIPE, MARKER = "model.safetensors", "recipe.json", "shipped.json"
REQUIRED = {"config": ("text_config", "vision_config"), "token_table": ("name", "seed", "shape", "sha256"), "weights": ("sha256",)}


def token_table(seed: int, rows: int, width: int) -> torch.Tensor:
    """The frozen token embedding table of a seed: N(0, 0.02²) from NumPy's PCG64, the same on every CPU."""
    values = np.random.default_rng(seed).standard_normal((rows, width), dtype=np.float32) * np.float32(TABLE_STD)
    return torch.from_numpy(values)


def table_digest(table: torch.Tensor) -> str:
    """SHA-256 of a table's fp32 bytes."""
    return hashlib.sha256(table.detach().to(torch.float32).contiguous().numpy().tobytes()).hexdigest()


def initial_model(out: Path, name: str = "small", seed: int = 0) -> Path:
    """Write the seeded random ``CLIPModel`` that training starts from (``t2i finetune --base OUT``) into ``out``.

    The towers come from ``torch.manual_seed(seed)``; the token table from ``token_table(seed)``.
    """
    text_config, vision_config = random_configs(name)
    config = CLIPConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), projection_dim=text_config.projection_dim)
    torch.manual_seed(seed)
    model = CLIPModel(config)
    embedding = model.text_model.embeddings.token_embedding
    with torch.no_grad():
        embedding.weight.copy_(token_table(seed, *embedding.weight.shape))
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(str(out))
    write_companions(model, None, out)
    (out / "table-seed").write_text(str(seed))
    return out


def pack(model_dir: Path, out: Path, recipe: dict[str, Any], table_seed: int) -> dict[str, Any]:
    """Store the trained ``model_dir`` as ``out/model.safetensors`` (fp16, no token table) and ``out/recipe.json``.

    Raises:
        UserError: the model's token table is not the one ``table_seed`` makes (it was trained, or seeded otherwise).
    """
    model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True)
    state = model.state_dict()
    table = state.pop(FROZEN)
    expected = token_table(table_seed, *table.shape)
    if not torch.equal(table, expected):
        raise UserError(f"the token table of {model_dir} is not the frozen one of seed {table_seed}: train with --freeze {FROZEN_PREFIX}")
    out.mkdir(parents=True, exist_ok=True)
    stored = {name: (tensor.half() if tensor.is_floating_point() else tensor).contiguous() for name, tensor in state.items()}
    save_file(stored, str(out / WEIGHTS))
    full = {
        **recipe,
        "config": model.config.to_dict(),
        "token_table": {"name": FROZEN, "seed": table_seed, "shape": list(table.shape), "std": TABLE_STD, "sha256": table_digest(expected)},
        "weights": {"file": WEIGHTS, "dtype": "float16", "sha256": hashlib.sha256((out / WEIGHTS).read_bytes()).hexdigest()},
    }
    (out / RECIPE).write_text(json.dumps(full, indent=1) + "\n")
    return full


def read_recipe(source: Path = SHIPPED) -> dict[str, Any]:
    """The recipe of a shipped model folder.

    Raises:
        UserError: the folder has no recipe or weights.
    """
    if not (source / RECIPE).is_file() or not (source / WEIGHTS).is_file():
        raise UserError(f"{source} holds no shipped model ({RECIPE} and {WEIGHTS}); rebuild it with: t2i shapes-demo --retrain --ship")
    recipe: dict[str, Any] = json.loads((source / RECIPE).read_text())
    missing = [f"{group}.{key}" for group, keys in REQUIRED.items() for key in keys if key not in recipe.get(group, {})]
    missing += [group for group in REQUIRED if not isinstance(recipe.get(group), dict)]
    if missing:
        raise UserError(f"{source / RECIPE} lacks {', '.join(sorted(set(missing)))}: rebuild it with: t2i shapes-demo --retrain --ship")
    return recipe


def materialize(out: Path, source: Path = SHIPPED) -> Path:
    """A ``CLIPModel`` folder (fp32, tokenizer, preprocessing) of the shipped model in ``out``, rebuilt when its recipe changed.

    Raises:
        UserError: the stored weights or the rebuilt token table do not match the recipe's digests.
    """
    recipe = read_recipe(source)
    stamp = recipe["weights"]["sha256"]
    if (out / MARKER).is_file() and json.loads((out / MARKER).read_text()).get("weights") == stamp and (out / "config.json").is_file():
        return out
    if hashlib.sha256((source / WEIGHTS).read_bytes()).hexdigest() != stamp:
        raise UserError(f"{source / WEIGHTS} does not match its recipe's digest: the file is damaged (git checkout it again)")
    table_spec = recipe["token_table"]
    table = token_table(int(table_spec["seed"]), *table_spec["shape"])
    if table_digest(table) != table_spec["sha256"]:
        raise UserError(f"the token table rebuilt from seed {table_spec['seed']} differs from the recipe's (NumPy {np.__version__} draws other numbers)")
    state = {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in load_file(str(source / WEIGHTS)).items()}
    state[table_spec["name"]] = table
    model = CLIPModel(CLIPConfig.from_dict(recipe["config"]))
    loaded = model.load_state_dict(state, strict=False)
    missing = set(loaded.missing_keys) - {"text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"}
    if missing or loaded.unexpected_keys:
        raise UserError(f"{source / WEIGHTS} does not fit its recipe's architecture (missing {sorted(missing)[:3]}, unexpected {loaded.unexpected_keys[:3]})")
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(str(out))
    write_companions(model, None, out)
    (out / MARKER).write_text(json.dumps({"weights": stamp, "source": str(source)}))
    return out
