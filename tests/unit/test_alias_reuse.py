"""Read paths reuse the alias's collection for a short time and recover when it was dropped."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from gateway.engine import SearchEngine
from gateway.filters import SearchFilter
from gateway.index import CollectionMissing, Hit, ImageIndex, ModelStamp
from inference.errors import FailedPrecondition
from inference.images import ImageLimits


class FakeIndex(ImageIndex):
    """An ImageIndex whose Milvus is a dict of collections; counts alias lookups."""

    def __init__(self) -> None:
        super().__init__("http://unused", "alias", ModelStamp("m", "c", 2))
        self.alias_target = "old"
        self.collections = {"old", "new"}
        self.lookups = 0

    def _ensure_active(self) -> str:
        self.lookups += 1
        return self.alias_target

    def search(self, collection: str, vector: np.ndarray, top_k: int, expression: str = "", min_score: float | None = None) -> list[Hit]:
        if collection not in self.collections:
            raise CollectionMissing(f"{collection} is gone")
        return [Hit(f"{collection}-hit", "", 1.0, [])]


def engine(index: FakeIndex, refresh_s: float) -> SearchEngine:
    return SearchEngine(encoder=None, index=index, max_top_k=10, max_batch=4, limits=ImageLimits(), alias_refresh_s=refresh_s)  # type: ignore[arg-type]


def read(search: SearchEngine) -> tuple[str, Any]:
    return asyncio.run(search._read("search", search.index.search, np.zeros(2, np.float32), 1))


def test_reads_within_the_refresh_window_skip_the_alias_lookup() -> None:
    index = FakeIndex()
    search = engine(index, refresh_s=60)
    assert read(search)[0] == "old" and index.lookups == 1
    for _ in range(5):
        assert read(search)[0] == "old"
    assert index.lookups == 1


def test_zero_refresh_resolves_every_time() -> None:
    index = FakeIndex()
    search = engine(index, refresh_s=0)
    for _ in range(3):
        read(search)
    assert index.lookups == 3


def test_a_dropped_collection_is_re_resolved_and_the_read_retried_once() -> None:
    index = FakeIndex()
    search = engine(index, refresh_s=60)
    read(search)
    index.alias_target = "new"  # a full reindex swapped the alias ...
    index.collections.discard("old")  # ... and dropped the old collection
    collection, hits = read(search)
    assert collection == "new" and hits[0].id == "new-hit" and index.lookups == 2
    assert read(search)[0] == "new" and index.lookups == 2


def test_the_retry_gives_up_when_the_new_collection_is_gone_too() -> None:
    index = FakeIndex()
    search = engine(index, refresh_s=60)
    read(search)
    index.collections.clear()
    with pytest.raises(CollectionMissing):
        read(search)


def test_swap_alias_forgets_the_recent_collection() -> None:
    index = FakeIndex()
    index.ensure_active()
    assert index.recent_active(60) == "old"
    index._call = lambda what, fn: None  # type: ignore[method-assign]  # no Milvus: the swap's calls are no-ops
    index.swap_alias("new")
    assert index.recent_active(60) is None


def test_recent_active_expires() -> None:
    index = FakeIndex()
    index.ensure_active()
    time.sleep(0.02)
    assert index.recent_active(0.01) is None and index.recent_active(60) == "old"


class CountingEncoder:
    """Counts encodes; the model guard must refuse before any of them."""

    def __init__(self) -> None:
        self.calls = 0
        self.preprocess_config = None

    async def encode_texts(self, texts: list[str], deadline: float | None = None) -> Any:
        self.calls += 1
        raise AssertionError("encoded although the collection belongs to another model")

    async def encode_pixels(self, pixels: np.ndarray, deadline: float | None = None) -> Any:
        self.calls += 1
        raise AssertionError("encoded although the collection belongs to another model")


class ForeignIndex(FakeIndex):
    def _ensure_active(self) -> str:
        raise FailedPrecondition("collection was indexed by someone/else-clip; run reindex --full")


def test_model_guard_refuses_before_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = CountingEncoder()
    search = SearchEngine(encoder=encoder, index=ForeignIndex(), max_top_k=10, max_batch=4, limits=ImageLimits(), alias_refresh_s=60)  # type: ignore[arg-type]
    with pytest.raises(FailedPrecondition):
        asyncio.run(search.search_text("a dog", 5, SearchFilter(), None, None))
    monkeypatch.setattr(search, "_pixels", lambda data: asyncio.sleep(0, np.zeros((3, 224, 224), np.float32)))
    with pytest.raises(FailedPrecondition):
        asyncio.run(search.search_image(b"jpeg bytes", None, 5, SearchFilter(), None, False, None))
    assert encoder.calls == 0
