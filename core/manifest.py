"""The export manifest: which model filled a model repository, and how to feed it.

``t2i export`` writes ``manifest.json`` at the root of the Triton model repository; the gateway
and the reindex job read it to tokenize and preprocess exactly as the model expects, and to stamp
the model id and weights checksum on every Milvus collection they fill.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
PRECISIONS = ("fp32", "fp16", "int8")
MANIFEST_FILE = "manifest.json"
TEXT_MODEL = "clip_text"
VISION_MODEL = "clip_vision"
# Tokenizer and preprocessing files live in the text and vision models' version folders.
TOKENIZER_FILE = "tokenizer.json"
PREPROCESSOR_FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class Manifest:
    """What an exported model repository holds.

    Attributes:
        model_id: Hub id, local path or ``random:<config>`` of the source checkpoint.
        checksum: SHA-256 over the weights of both towers (names, shapes and bytes).
        dimension: Length of the projected embeddings.
        precision: ``fp32``, ``fp16`` or ``int8``.
        context_length: Maximum number of tokens, special tokens included (77 for CLIP).
        image_size: Side of the square model input in pixels.
        random_weights: True when the weights are random (rankings are meaningless).
        version: Model version folder inside the repository.
        parity: Minimum cosine similarity to PyTorch per tower, measured at export.
    """

    model_id: str
    checksum: str
    dimension: int
    precision: str
    context_length: int
    image_size: int
    random_weights: bool
    version: int = 1
    parity: dict[str, float] = field(default_factory=dict)

    def write(self, repo: Path) -> Path:
        """Write the manifest as JSON at the root of ``repo``."""
        path = repo / MANIFEST_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, repo: Path) -> Manifest:
        """Read the manifest of an exported repository.

        Raises:
            FileNotFoundError: with a hint to run the export when the file is missing.
        """
        path = Path(repo) / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: export a model first ('t2i export --out {repo}')")
        return cls(**json.loads(path.read_text()))

    def version_dir(self, repo: Path, model: str) -> Path:
        """The version folder of ``model`` (``clip_text`` or ``clip_vision``) in ``repo``."""
        return Path(repo) / model / str(self.version)
