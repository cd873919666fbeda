"""A bounded LRU cache of query embeddings, keyed by the model id and the normalized text.

CLIP's tokenizer applies NFC, lower-cases and collapses white space, so texts equal under that
normalization have identical tokens and identical embeddings: caching on it is exact.
"""

from __future__ import annotations

import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter, Gauge

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
        self._entries: OrderedDict[tuple[str, str], CachedText] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str, text: str) -> CachedText | None:
        """The cached entry, counted as a hit or a miss."""
        if self.capacity <= 0:
            return None
        key = (model_id, normalize(text))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        CACHE_LOOKUPS.labels("hit" if entry is not None else "miss").inc()
        return entry

    def put(self, model_id: str, text: str, entry: CachedText) -> None:
        """Store an entry, evicting the least recently used beyond capacity."""
        if self.capacity <= 0:
            return
        key = (model_id, normalize(text))
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            CACHE_SIZE.set(len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
