"""Stand-ins for Triton and Milvus that drive the reindex job's own logic (unit tests only).

``FakeEncoder`` implements ``inference.encoder_port.ImageEncoder`` and ``MemoryIndex`` (rows kept
as ``id -> (content_hash, source)``) implements ``core.index_port.ReindexIndex``, the calls that
``reindex.job.Reindexer`` makes, without ``type: ignore``: mypy holds both to the ports (see the
assignments at the end). The real servers are in ``tests/integration/test_reindex.py`` and the
chaos test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core.index_port import ReindexIndex
from core.records import SCHEMA_VERSION, ModelStamp
from inference.encoder_port import ImageEncoder
from inference.images import PreprocessConfig

STAMP = ModelStamp("test/clip", "0" * 64, 4)


class FakeEncoder:
    """Every image becomes the same unit vector."""

    preprocess_config = PreprocessConfig(shortest_edge=16, crop_size=16)

    async def encode_pixels(self, pixel_values: np.ndarray, deadline: float | None = None) -> np.ndarray:
        return np.ones((len(pixel_values), 4), dtype=np.float32)


class MemoryIndex:
    """Collections of rows in dicts, one alias; ``schema`` is the row schema of the collection it starts with."""

    stamp = STAMP

    def __init__(self, rows: dict[str, tuple[str, str]] | None = None, schema: int = SCHEMA_VERSION):
        self.collections: dict[str, dict[str, tuple[str, str]]] = {"c0": dict(rows or {})}
        self.schemas = {"c0": schema}
        self.alias: str | None = "c0"
        self.scans = 0
        self.promoted: list[str] = []

    @property
    def rows(self) -> dict[str, tuple[str, str]]:
        """The rows behind the alias."""
        assert self.alias is not None
        return self.collections[self.alias]

    def ensure_active(self) -> str:
        assert self.alias is not None
        return self.alias

    def active_collection(self) -> str | None:
        return self.alias

    def orphans(self) -> list[str]:
        return []

    def drop(self, collection: str) -> None:
        del self.collections[collection], self.schemas[collection]

    def new_collection(self) -> str:
        name = f"c{len(self.collections)}"
        self.collections[name], self.schemas[name] = {}, SCHEMA_VERSION
        return name

    def run_collection(self, run_id: str) -> str:
        name = f"run_{run_id}"
        if name not in self.collections:
            self.collections[name], self.schemas[name] = {}, SCHEMA_VERSION
        return name

    def schema_version(self, collection: str) -> int:
        return self.schemas[collection]

    def stamp_of(self, collection: str) -> ModelStamp:
        return self.stamp

    def stored(self, collection: str) -> dict[str, tuple[str, str]]:
        self.scans += 1
        return dict(self.collections[collection])

    def upsert(self, collection: str, rows: list[dict[str, Any]]) -> None:
        keep_source = self.schemas[collection] >= 2
        self.collections[collection].update({row["id"]: (row["content_hash"], row["source"] if keep_source else "") for row in rows})

    def copy_rows(self, from_collection: str, to_collection: str, ids: Sequence[str], origins: Mapping[str, str]) -> list[str]:
        found = [item_id for item_id in ids if item_id in self.collections[from_collection]]
        for item_id in found:
            digest, origin = self.collections[from_collection][item_id]
            self.collections[to_collection][item_id] = (digest, origin or origins.get(item_id, ""))
        return found

    def delete(self, collection: str, ids: Sequence[str]) -> int:
        rows = self.collections[collection]
        present = [item_id for item_id in ids if item_id in rows]
        for item_id in present:
            del rows[item_id]
        return len(present)

    def seal(self, collection: str) -> bool:
        return True

    def count(self, collection: str, *, expression: str = "") -> int:
        keys = set(re.findall(r'"((?:[^"\\]|\\.)*)"', expression))
        return sum(1 for _, origin in self.collections[collection].values() if not expression or origin in keys)

    def duplicated(self, collection: str, ids: Sequence[str]) -> list[str]:
        return []  # one row per id here: Milvus's second rows are the verify tests' DoubledIndex

    def promote(self, collection: str, keep_previous: bool = True) -> tuple[str | None, list[str]]:
        previous, self.alias = self.alias, collection
        self.promoted.append(collection)
        return previous, []  # nothing is dropped: every collection stays readable to the tests


# mypy holds the fakes to the ports the job takes (a member missing or with another signature fails `mypy`).
_encoder: ImageEncoder = FakeEncoder()
_index: ReindexIndex = MemoryIndex()
