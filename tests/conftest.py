"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import CLIPTokenizer, CLIPTokenizerFast

from export.vocab import write_clip_vocab


@pytest.fixture(scope="session")
def vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CLIP vocabulary files and a fast ``tokenizer.json`` built offline from open-clip-torch."""
    folder = tmp_path_factory.mktemp("vocab")
    vocab, merges = write_clip_vocab(folder)
    CLIPTokenizerFast(vocab_file=str(vocab), merges_file=str(merges)).save_pretrained(str(folder / "fast"))
    return folder


@pytest.fixture(scope="session")
def reference_tokenizer(vocab_dir: Path) -> CLIPTokenizer:
    """The reference (slow, pure Python) ``CLIPTokenizer``."""
    return CLIPTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"))
