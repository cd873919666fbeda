"""Load CLIP's two towers from a hub id, a local or fine-tuned checkpoint, or random weights.

``random`` builds the exact ViT-B/32 architecture (``CLIPConfig()`` defaults) and ``tiny`` a small
config for fast tests, both with seeded random weights: real shapes and speed, meaningless
rankings. The hub is probed with a short connection test first, so an offline machine gets one
clear error in seconds instead of a minute of retries.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection

from core.errors import UserError

logger = logging.getLogger(__name__)

RANDOM_MODELS = {"random": "random:vit-b-32", "tiny": "random:tiny", "small": "random:small"}
HUB_HOST = "huggingface.co"


class HubUnreachable(UserError):
    """The model is not cached locally and the Hugging Face hub cannot be reached."""


@dataclass
class Towers:
    """The two CLIP towers of one checkpoint.

    Attributes:
        text: Text encoder with projection (``input_ids``, ``attention_mask`` → ``text_embeds``).
        vision: Vision encoder with projection (``pixel_values`` → ``image_embeds``).
        model_id: What was loaded (hub id, resolved local path, or ``random:<name>``).
        source: Folder holding tokenizer/preprocessor files, if the checkpoint has them.
        random_weights: True for ``random`` and ``tiny``.
    """

    text: CLIPTextModelWithProjection
    vision: CLIPVisionModelWithProjection
    model_id: str
    source: str | None
    random_weights: bool

    @property
    def dimension(self) -> int:
        """Length of the projected embedding."""
        return int(self.text.config.projection_dim)

    @property
    def context_length(self) -> int:
        """Maximum number of tokens of the text tower."""
        return int(self.text.config.max_position_embeddings)

    @property
    def image_size(self) -> int:
        """Side of the square input image."""
        return int(self.vision.config.image_size)

    def checksum(self) -> str:
        """SHA-256 over both towers' parameter names, shapes and bytes."""
        digest = hashlib.sha256()
        for prefix, model in (("text", self.text), ("vision", self.vision)):
            for name, tensor in sorted(model.state_dict().items()):
                digest.update(f"{prefix}.{name}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


def random_configs(name: str) -> tuple[CLIPTextConfig, CLIPVisionConfig]:
    """Tower configs for ``random`` (exact ViT-B/32, the ``CLIPConfig`` defaults), ``tiny`` or ``small``.

    ``small`` is the model the shapes demo trains from scratch on a CPU: the real BPE vocabulary
    and 32 tokens of context, a 4-layer ViT with 16-pixel patches on 64×64 images, width 128. (With
    8-pixel patches a step took three times as long, and a sweep reached no better P@10 for the time:
    docs/relevance.md.)
    """
    if name == "random":
        return CLIPTextConfig(), CLIPVisionConfig()
    if name == "small":
        shared = {"hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 4, "projection_dim": 128}
        return CLIPTextConfig(**shared, num_hidden_layers=3, max_position_embeddings=32), CLIPVisionConfig(
            **shared, num_hidden_layers=4, image_size=64, patch_size=16
        )
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "projection_dim": 32}
    return CLIPTextConfig(**small), CLIPVisionConfig(**small)


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True when a TCP connection to the hub can be opened within ``timeout_s``."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def random_model(model: str) -> tuple[str, int] | None:
    """``(name, seed)`` for ``random``, ``tiny`` or ``NAME@SEED`` (other random weights, for rollouts); None otherwise."""
    name, _, seed = model.partition("@")
    if name not in RANDOM_MODELS:
        return None
    if seed and not seed.isdigit():
        raise ValueError(f"the seed of {model!r} must be a non-negative integer (for example {name}@2)")
    return name, int(seed or 0)


def model_key(model: str) -> str:
    """The ``model_id`` that loading ``model`` records in a manifest (``random:tiny``, ``random:tiny@2``, ...)."""
    if (random := random_model(model)) is not None:
        name, seed = random
        return RANDOM_MODELS[name] + (f"@{seed}" if seed else "")
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def load_towers(model: str) -> Towers:
    """Load both towers.

    Args:
        model: ``random``, ``tiny`` (``NAME@SEED`` for other random weights), a local checkpoint folder, or a hub id.

    Raises:
        HubUnreachable: a hub id that is neither cached nor downloadable.
    """
    if (random := random_model(model)) is not None:
        name, seed = random
        text_config, vision_config = random_configs(name)
        torch.manual_seed(2 * seed)
        text = CLIPTextModelWithProjection(text_config)
        torch.manual_seed(2 * seed + 1)
        vision = CLIPVisionModelWithProjection(vision_config)
        return Towers(text.eval(), vision.eval(), model_key(model), None, True)
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face CLIP checkpoint (no config.json)")
        return _from_pretrained(str(path.resolve()), str(path.resolve()), local_only=True)
    try:
        return _from_pretrained(model, model, local_only=True)
    except OSError:
        pass
    if not hub_reachable():
        raise HubUnreachable(f"cannot download '{model}': the Hugging Face hub ({HUB_HOST}) is unreachable and the model is not in the local cache")
    return _from_pretrained(model, model, local_only=False)


def _from_pretrained(name: str, model_id: str, local_only: bool) -> Towers:
    text = CLIPTextModelWithProjection.from_pretrained(name, local_files_only=local_only)
    vision = CLIPVisionModelWithProjection.from_pretrained(name, local_files_only=local_only)
    logger.info("loaded %s", name)
    return Towers(text.eval(), vision.eval(), model_id, name, False)
