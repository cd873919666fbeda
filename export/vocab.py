"""The CLIP BPE vocabulary, available offline from the ``open-clip-torch`` wheel.

OpenAI's CLIP ships its byte-pair merges as ``bpe_simple_vocab_16e6.txt.gz``; the Hugging Face
``vocab.json`` and ``merges.txt`` of ``openai/clip-vit-base-patch32`` are derived from the same
file in the same order. This module performs that derivation, so tokenizer files can be written
without a hub download.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

VOCAB_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# The merges used by CLIP: lines 1 .. 49152-256-2 of the file (line 0 is a version header).
_MERGE_COUNT = 49152 - 256 - 2


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible mapping of the 256 byte values to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes), strict=True))


def open_clip_vocab_path() -> Path:
    """Locate the BPE file inside the installed ``open_clip`` package without importing it.

    Raises:
        FileNotFoundError: when ``open-clip-torch`` is not installed.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "open-clip-torch is not installed; it carries the CLIP BPE vocabulary (run 'make install' or 'pip install --no-deps open-clip-torch')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / VOCAB_FILE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the open-clip-torch install")
    return path


def write_clip_vocab(out_dir: Path, bpe_path: Path | None = None) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` for ``CLIPTokenizer`` into ``out_dir``.

    Args:
        out_dir: Folder to write into (created if needed).
        bpe_path: The gzipped BPE file; defaults to the one in ``open-clip-torch``.

    Returns:
        The paths of the vocabulary and merges files.
    """
    bpe_path = bpe_path or open_clip_vocab_path()
    with gzip.open(bpe_path) as packed:
        lines = packed.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _MERGE_COUNT + 1]]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [char + "</w>" for char in byte_chars]
    tokens += ["".join(merge) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_path = out_dir / "vocab.json"
    merges_path = out_dir / "merges.txt"
    vocab_path.write_text(json.dumps({token: i for i, token in enumerate(tokens)}, ensure_ascii=False))
    merges_path.write_text("#version: 0.2\n" + "\n".join(" ".join(merge) for merge in merges) + "\n")
    logger.info("wrote CLIP vocabulary (%d tokens) from %s", len(tokens), bpe_path)
    return vocab_path, merges_path
