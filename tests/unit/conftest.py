"""Fixtures for unit tests: a model repository without ONNX files.

``model_repo`` writes its tokenizer and preprocessing files with ``transformers``, imported when it
runs; the tests that use it are marked ``torch`` (``TORCH_FIXTURES`` in ``tests/support/markers.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.manifest import PREPROCESSOR_FILE, TEXT_MODEL, TOKENIZER_FILE, VISION_MODEL, Manifest


@pytest.fixture(scope="session")
def model_repo(vocab_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What adapters read from an exported repository (manifest, tokenizer, preprocessing), without the ONNX files."""
    from transformers import CLIPImageProcessor

    repo = tmp_path_factory.mktemp("repo")
    manifest = Manifest("unit:model", "c" * 64, 2, "fp32", 77, 224, True)
    for model in (TEXT_MODEL, VISION_MODEL):
        manifest.version_dir(repo, model).mkdir(parents=True)
    shutil.copyfile(vocab_dir / "fast" / TOKENIZER_FILE, manifest.version_dir(repo, TEXT_MODEL) / TOKENIZER_FILE)
    CLIPImageProcessor().to_json_file(str(manifest.version_dir(repo, VISION_MODEL) / PREPROCESSOR_FILE))
    manifest.write(repo)
    return repo
