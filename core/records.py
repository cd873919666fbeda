"""What the index stores and returns: the model stamp, hits, rows, and the limits on their fields."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.manifest import Manifest

MAX_ID_BYTES = 512
MAX_URI_BYTES = 2048
MAX_LABELS = 32
MAX_LABEL_BYTES = 128

# The row schema of new collections, recorded in each collection's description. Version 1 (before
# the key existed) had no ``source``; version 2 no typed metadata (``METADATA_FIELDS``). A collection
# keeps the version it was created with, and the next ``t2i reindex --full`` moves it to the current
# one. A field added later adds a version here.
SCHEMA_VERSION = 3
METADATA_SCHEMA = 3  # the first row schema with the typed metadata
METADATA_FIELDS = ("width", "height", "bytes", "format", "modified_time", "capture_time")
SCHEMA_FIELDS: dict[int, frozenset[str]] = {
    1: frozenset({"id", "vector", "uri", "labels", "content_hash"}),
    2: frozenset({"id", "vector", "uri", "labels", "content_hash", "source"}),
    3: frozenset({"id", "vector", "uri", "labels", "content_hash", "source", *METADATA_FIELDS}),
}
MAX_FORMAT_BYTES = 16
# Milvus 2.3 has no nullable fields: a time that is not known is stored as this many microseconds since
# the epoch (about 146,000 years before 1970, earlier than any protobuf Timestamp can be). Width,
# height and bytes are 0 and the format "" when unknown (rows carried over from an older collection).
UNKNOWN_TIME = -(2**62)


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
class ImageMetadata:
    """What the server read from an image when it indexed it (times in microseconds since the epoch, UTC; None: unknown)."""

    width: int
    height: int
    bytes: int
    format: str
    modified_time: int | None = None
    capture_time: int | None = None

    def row(self) -> dict[str, Any]:
        """The metadata fields of a row (schema 3), with ``UNKNOWN_TIME`` for unknown times."""
        return {
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "format": self.format,
            "modified_time": UNKNOWN_TIME if self.modified_time is None else self.modified_time,
            "capture_time": UNKNOWN_TIME if self.capture_time is None else self.capture_time,
        }

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> ImageMetadata | None:
        """The metadata of a stored row (None when the row has none: an older schema, or a row carried over without it)."""
        if "width" not in row or (not row.get("width") and not row.get("format")):
            return None
        times = [int(row.get(name, UNKNOWN_TIME)) for name in ("modified_time", "capture_time")]
        modified, captured = (None if t == UNKNOWN_TIME else t for t in times)
        return cls(int(row["width"]), int(row.get("height", 0)), int(row.get("bytes", 0)), str(row.get("format", "")), modified, captured)


NO_METADATA_ROW = ImageMetadata(0, 0, 0, "").row()  # the metadata fields of a row whose metadata is not known


def hit_fields(schema_version: int) -> list[str]:
    """The fields a search or a record read returns from a collection of ``schema_version``."""
    return ["uri", "labels", *(METADATA_FIELDS if schema_version >= METADATA_SCHEMA else ())]


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    uri: str
    score: float
    labels: list[str]
    metadata: ImageMetadata | None = None


@dataclass(frozen=True)
class Record:
    """What is stored for one indexed image besides its vector."""

    id: str
    uri: str
    labels: list[str]
    metadata: ImageMetadata | None = None


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


def item_hash(content: bytes, uri: str, labels: Sequence[str], modified_time: int | None = None) -> str:
    """SHA-256 of an item's bytes, uri, labels and modification time: equal hashes mean nothing to re-index.

    The other typed metadata is read from the bytes, so the bytes cover it. A file whose
    modification time changed while its bytes did not is rewritten, so the stored time stays true.
    Without a time (unknown, or a collection of schema 2, which does not store it) the hash is the
    one schema 2 stored: upgrading the code re-encodes nothing.
    """
    digest = hashlib.sha256(content)
    digest.update(b"\x00" + json.dumps([uri, sorted(labels)] + ([] if modified_time is None else [modified_time])).encode())
    return digest.hexdigest()


def make_row(
    item_id: str, vector: np.ndarray, uri: str, labels: Sequence[str], content_hash: str, source: str = "", metadata: ImageMetadata | None = None
) -> dict[str, Any]:
    """A Milvus row in the current schema; ``source`` is the folder or prefix a reindex read it from ("" for API writes).

    ``ImageIndex.upsert`` leaves out the fields an older collection lacks.
    """
    return {
        "id": item_id,
        "vector": vector.astype(np.float32).tolist(),
        "uri": uri,
        "labels": list(labels),
        "content_hash": content_hash,
        "source": source,
        **(metadata.row() if metadata is not None else NO_METADATA_ROW),
    }
