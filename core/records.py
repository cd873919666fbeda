"""What the index stores and returns: the model stamp, hits, rows, and the limits on their fields."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.manifest import Manifest

MAX_ID_BYTES = 512
MAX_URI_BYTES = 2048
MAX_LABELS = 32
MAX_LABEL_BYTES = 128

# The row schema of new collections, recorded in each collection's description. Version 1 (before
# the key existed) had no ``source``; a collection keeps the version it was created with, and the
# next ``t2i reindex --full`` moves it to the current one. A field added later adds a version here.
SCHEMA_VERSION = 2
SCHEMA_FIELDS: dict[int, frozenset[str]] = {
    1: frozenset({"id", "vector", "uri", "labels", "content_hash"}),
    2: frozenset({"id", "vector", "uri", "labels", "content_hash", "source"}),
}


@dataclass(frozen=True)
class ModelStamp:
    """The model recorded on a collection: vectors from different models are not comparable."""

    model_id: str
    checksum: str
    dimension: int

    def describe(self, schema_version: int = SCHEMA_VERSION) -> str:
        """JSON for the description of a collection of ``schema_version`` filled with this model."""
        return json.dumps({"model_id": self.model_id, "model_checksum": self.checksum, "dimension": self.dimension, "schema_version": schema_version})

    @classmethod
    def of(cls, manifest: Manifest) -> ModelStamp:
        """The stamp of the model an exported repository holds."""
        return cls(manifest.model_id, manifest.checksum, manifest.dimension)

    @classmethod
    def parse(cls, description: str) -> ModelStamp | None:
        """The stamp in a collection description, or None if it has none."""
        try:
            raw = json.loads(description)
            return cls(raw["model_id"], raw["model_checksum"], int(raw["dimension"]))
        except (ValueError, KeyError, TypeError):
            return None


def schema_version_of(description: str) -> int:
    """The row schema version a collection description records (1 when it records none: the first schema)."""
    try:
        return int(json.loads(description).get("schema_version", 1))
    except (ValueError, AttributeError, TypeError):
        return 1


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    uri: str
    score: float
    labels: list[str]


@dataclass(frozen=True)
class Record:
    """What is stored for one indexed image besides its vector."""

    id: str
    uri: str
    labels: list[str]


@dataclass(frozen=True)
class IndexInfo:
    """Facts about the active collection."""

    count: int
    stamp: ModelStamp
    collection: str
    alias: str


@dataclass(frozen=True)
class HnswParams:
    """HNSW build and search parameters."""

    m: int = 16
    ef_construction: int = 200
    ef: int = 64


def item_hash(content: bytes, uri: str, labels: Sequence[str]) -> str:
    """SHA-256 of an item's bytes and metadata: equal hashes mean nothing to re-index."""
    digest = hashlib.sha256(content)
    digest.update(b"\x00" + json.dumps([uri, sorted(labels)]).encode())
    return digest.hexdigest()


def make_row(item_id: str, vector: np.ndarray, uri: str, labels: Sequence[str], content_hash: str, source: str = "") -> dict[str, Any]:
    """A Milvus row in the current schema; ``source`` is the folder or prefix a reindex read it from ("" for API writes)."""
    return {
        "id": item_id,
        "vector": vector.astype(np.float32).tolist(),
        "uri": uri,
        "labels": list(labels),
        "content_hash": content_hash,
        "source": source,
    }
