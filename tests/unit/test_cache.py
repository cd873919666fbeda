"""The query-embedding cache: exact keys, LRU eviction, per-model separation."""

from __future__ import annotations

import numpy as np

from search.cache import CachedText, EmbeddingCache, normalize


def entry(value: float) -> CachedText:
    return CachedText(np.array([value], dtype=np.float32), 3, False)


def test_normalization_matches_clip_tokenizer_rules() -> None:
    assert normalize("  Red   CAR\n") == normalize("red car") == "red car"
    assert normalize("cafe\u0301") == normalize("café")  # NFC
    assert normalize("red car") != normalize("red cars")


def test_hits_misses_and_lru_eviction() -> None:
    cache = EmbeddingCache(2)
    assert cache.get("m", "a") is None
    cache.put("m", "a", entry(1))
    cache.put("m", "b", entry(2))
    assert cache.get("m", " A ") is not None  # 'a' is now most recently used
    cache.put("m", "c", entry(3))  # evicts 'b'
    assert cache.get("m", "b") is None and cache.get("m", "a") is not None and cache.get("m", "c") is not None
    assert len(cache) == 2


def test_models_do_not_share_entries() -> None:
    cache = EmbeddingCache(4)
    cache.put("model-a", "red car", entry(1))
    assert cache.get("model-b", "red car") is None


def test_zero_capacity_disables() -> None:
    cache = EmbeddingCache(0)
    cache.put("m", "a", entry(1))
    assert cache.get("m", "a") is None and len(cache) == 0
