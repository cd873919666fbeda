"""Fixtures shared by unit and integration tests, and the ``torch`` marker's automatic half.

The fixtures here build CLIP tokenizer files with ``transformers`` and the BPE file of
``open-clip-torch`` (the export extra's tools), so they import them when they run: this module
itself loads in the gateway-only environment. Every test that uses them, directly or through another
fixture, is marked ``torch``; test modules that import those libraries themselves carry the marker
as their ``pytestmark`` (``tests/unit/test_torch_marker.py`` holds them to it), and are not even
imported when ``-m`` leaves them out. ``pytest -m "not torch"`` is then the set that runs without
them; without ``-m`` every test runs, as before (``tests/support/markers.py``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.markers import TORCH_FIXTURES, leaves_out_torch, marked_torch

if TYPE_CHECKING:
    from transformers import CLIPTokenizer


def pytest_configure(config: pytest.Config) -> None:
    """The export's tracing warnings are ignored where torch is installed (the filter names a torch class)."""
    if importlib.util.find_spec("torch") is not None:
        config.addinivalue_line("filterwarnings", "ignore::torch.jit.TracerWarning")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A test module marked ``torch`` is not imported when ``-m`` leaves its tests out (it imports what may be absent)."""
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_") and leaves_out_torch(config.option.markexpr):
        return True if marked_torch(collection_path) else None
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``torch`` every test that uses a fixture of ``TORCH_FIXTURES``, before ``-m`` selects."""
    for item in items:
        if TORCH_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.torch)


@pytest.fixture(scope="session")
def vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CLIP vocabulary files and a fast ``tokenizer.json`` built offline from open-clip-torch."""
    from transformers import CLIPTokenizerFast

    from export.vocab import write_clip_vocab

    folder = tmp_path_factory.mktemp("vocab")
    vocab, merges = write_clip_vocab(folder)
    CLIPTokenizerFast(vocab_file=str(vocab), merges_file=str(merges)).save_pretrained(str(folder / "fast"))
    return folder


@pytest.fixture(scope="session")
def reference_tokenizer(vocab_dir: Path) -> CLIPTokenizer:
    """The reference (slow, pure Python) ``CLIPTokenizer``."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"))
