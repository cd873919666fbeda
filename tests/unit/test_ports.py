"""The adapters and the fakes implement the ports that the engine and the reindex job take.

mypy holds them to the ports statically (the typed assignments below, and those at the end of
``fake_reindex.py``); this test does at run time what it can without mypy: every member of a port
is there on the adapter and the fake, and every parameter a caller may pass by name has that name.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from core.index import ImageIndex
from core.index_port import ReindexIndex, SearchIndex, VectorIndex
from core.manifest import Manifest
from core.records import ModelStamp
from inference.encoder_port import Encoder, EncoderCatalog, ImageEncoder
from inference.models import ModelCatalog
from tests.unit.fake_milvus import FakeMilvusClient
from tests.unit.fake_reindex import FakeEncoder, MemoryIndex
from tests.unit.fake_triton import FakeTritonClient


def members(port: type) -> list[str]:
    """The members a Protocol declares, its bases' included."""
    names: set[str] = set()
    for klass in port.__mro__:
        if klass is port or getattr(klass, "_is_protocol", False):
            names |= {name for name in vars(klass) if not name.startswith("_")}
    return sorted(names)


def mismatches(port: type, implementation: object) -> list[str]:
    """Members of ``port`` that ``implementation`` lacks, and parameters it does not take under the port's names."""
    problems = []
    for name in members(port):
        if not hasattr(implementation, name):
            problems.append(f"no {name}")
            continue
        declared = vars(next(k for k in port.__mro__ if name in vars(k)))[name]
        if isinstance(declared, property) or not callable(declared):
            continue
        given = inspect.signature(getattr(implementation, name)).parameters
        for parameter in list(inspect.signature(declared).parameters.values())[1:]:
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY) and parameter.name not in given:
                problems.append(f"{name} takes no {parameter.name}")
    return problems


def test_the_ports_name_what_their_callers_use() -> None:
    assert {"search", "ensure_active", "recent_active", "checked_stamp"} <= set(members(SearchIndex))
    assert {"stored", "copy_rows", "promote", "seal", "count", "stamp"} <= set(members(ReindexIndex))
    assert set(members(VectorIndex)) == set(members(SearchIndex)) | set(members(ReindexIndex))
    assert {"encode_pixels", "preprocess_config"} == set(members(ImageEncoder))
    assert {"encode_texts", "manifest", "tokenizer", "ready"} <= set(members(Encoder))
    assert {"for_stamp", "newest", "serves", "start", "close"} <= set(members(EncoderCatalog))


async def test_the_adapters_implement_the_ports(model_repo: Path) -> None:
    catalog: EncoderCatalog = ModelCatalog("fake:1", model_repo, client=FakeTritonClient())
    encoder: Encoder = catalog.newest
    index: VectorIndex = ImageIndex("http://fake", "alias", ModelStamp.of(Manifest.read(model_repo)), client=FakeMilvusClient())
    try:
        assert mismatches(EncoderCatalog, catalog) == []
        assert mismatches(Encoder, encoder) == []
        assert mismatches(VectorIndex, index) == []
    finally:
        await catalog.close()


@pytest.mark.parametrize(("port", "fake"), [(ImageEncoder, FakeEncoder()), (ReindexIndex, MemoryIndex())])
def test_the_reindex_fakes_implement_the_ports(port: type, fake: object) -> None:
    assert mismatches(port, fake) == []


def test_a_member_missing_or_renamed_is_found() -> None:
    class Drifted:
        preprocess_config = FakeEncoder.preprocess_config

        async def encode_pixels(self, pixels: object) -> object:  # renamed, and no deadline
            return pixels

    assert mismatches(ImageEncoder, Drifted()) == ["encode_pixels takes no pixel_values", "encode_pixels takes no deadline"]
    assert mismatches(ReindexIndex, object()) == [f"no {name}" for name in members(ReindexIndex)]
