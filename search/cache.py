"""A bounded LRU cache of query embeddings, keyed by the model id and the normalized text.

CLIP's tokenizer applies NFC, lower-cases and collapses white space, so texts equal under that
normalization have identical tokens and identical embeddings: caching on it is exact.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter, Gauge

from core.lru import LruCache

CACHE_LOOKUPS = Counter("t2i_embedding_cache_total", "Query-embedding cache lookups by result", ["result"])
CACHE_SIZE = Gauge("t2i_embedding_cache_entries", "Entries in the query-embedding cache")


@dataclass(frozen=True)
class CachedText:
    """A text embedding and what the response reports about its tokens."""

    vector: np.ndarray
    tokens: int
    truncated: bool


def normalize(text: str) -> str:
    """The key under which equal-token texts meet."""
    return unicodedata.normalize("NFC", " ".join(text.split())).lower()


class EmbeddingCache:
    """Thread-safe LRU of ``(model_id, normalized text) -> CachedText``; capacity 0 disables it."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: LruCache[tuple[str, str], CachedText] = LruCache(capacity)

    def get(self, model_id: str, text: str) -> CachedText | None:
        """The cached entry, counted as a hit or a miss."""
        if self.capacity <= 0:
            return None
        entry = self._entries.get((model_id, normalize(text)))
        CACHE_LOOKUPS.labels("hit" if entry is not None else "miss").inc()
        return entry

    def put(self, model_id: str, text: str, entry: CachedText) -> None:
        """Store an entry, evicting the least recently used beyond capacity."""
        if self.capacity > 0:
            CACHE_SIZE.set(self._entries.put((model_id, normalize(text)), entry))

    def __len__(self) -> int:
        return len(self._entries)
