"""The vector index the search engine and the reindex job depend on, as typed ports.

``core.index.ImageIndex`` (Milvus) is the one adapter behind them. The engine
(``search.engine.SearchEngine``) takes a ``SearchIndex``, the job (``reindex.job.Reindexer``) a
``ReindexIndex``; ``VectorIndex`` is both, which is what ``ImageIndex`` is
(``tests/unit/test_ports.py`` holds it to that). Each member is one that a caller uses, under
``ImageIndex``'s names: the engine passes deadlines, the job does not (its calls are retried within
the index's retry budget instead), so ``ReindexIndex`` declares the calls as the job makes them and
its fake (``tests/unit/fake_reindex.py`` ``MemoryIndex``) implements them without ``type: ignore``.
A new call means a new member, which the fakes must then implement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from core.records import Hit, IndexInfo, ModelStamp, Record


class VectorPages(Protocol):
    """An open scan (``SearchIndex.scan_vectors``): pages of ``(id, vector)`` in id order, until an empty one."""

    def next(self, deadline: float | None = None) -> list[tuple[str, np.ndarray]]:
        """The next page; empty when the scan is over."""
        ...

    def close(self) -> None:
        """Release the scan on the server."""
        ...


class SearchIndex(Protocol):
    """What the search engine asks of the index: the active collection, and rows read and written within a deadline."""

    def close(self) -> None:
        """Close the connection."""
        ...

    def active(self, deadline: float | None = None) -> str | None:
        """The active collection, model-checked, or None when nothing was indexed yet (never writes)."""
        ...

    def ensure_active(self, deadline: float | None = None) -> str:
        """The active collection, created and aliased if there is none (writers only); model-checked."""
        ...

    def recent_active(self, max_age_s: float) -> str | None:
        """The collection ``active`` or ``ensure_active`` returned less than ``max_age_s`` ago, or None."""
        ...

    def checked_stamp(self, collection: str) -> ModelStamp:
        """The stamp of a collection that ``active``, ``ensure_active`` or ``recent_active`` returned."""
        ...

    def search(
        self, collection: str, vector: np.ndarray, top_k: int, expression: str = "", min_score: float | None = None, deadline: float | None = None
    ) -> list[Hit]:
        """Nearest neighbours by cosine similarity, best first."""
        ...

    def vector_of(self, collection: str, item_id: str, deadline: float | None = None) -> np.ndarray:
        """The stored vector of ``item_id`` (``NotFound`` when there is none)."""
        ...

    def hashes(self, collection: str, ids: Iterable[str] | None = None, deadline: float | None = None) -> dict[str, str]:
        """``id -> content_hash`` of the given ids, or of every row when ids is None."""
        ...

    def upsert(self, collection: str, rows: list[dict[str, Any]], deadline: float | None = None) -> None:
        """Insert or replace rows by id."""
        ...

    def delete(self, collection: str, ids: Sequence[str], deadline: float | None = None) -> int:
        """Delete ids; how many of them existed."""
        ...

    def records(self, collection: str, ids: Sequence[str], deadline: float | None = None) -> list[Record]:
        """The stored uri and labels of ``ids`` that are indexed, in the order asked."""
        ...

    def labels(self, collection: str, max_rows: int, deadline: float | None = None) -> tuple[list[str], bool]:
        """Distinct labels of the first ``max_rows`` rows, sorted, and whether that was every row."""
        ...

    def info(self, deadline: float | None = None) -> IndexInfo:
        """Count, stamp and names of the active collection."""
        ...

    def count(self, collection: str, deadline: float | None = None, expression: str = "") -> int:
        """Number of rows (that match ``expression``, when given)."""
        ...

    def scan_vectors(self, collection: str, expression: str = "", after: str | None = None, batch: int = 1000, deadline: float | None = None) -> VectorPages:
        """An open scan of ``(id, vector)`` rows (that match ``expression``) whose id sorts after ``after``, in id order."""
        ...

    def vectors_of(self, collection: str, ids: Sequence[str], deadline: float | None = None) -> dict[str, np.ndarray]:
        """The stored vectors of the ``ids`` that are indexed."""
        ...

    def range_search(
        self, collection: str, vectors: np.ndarray, min_score: float, limit: int, expression: str = "", deadline: float | None = None
    ) -> list[list[tuple[str, float]]]:
        """For each of ``vectors``, up to ``limit`` ``(id, cosine)`` of rows at cosine >= ``min_score``, best first (Milvus range search)."""
        ...

    def loaded(self, collection: str, deadline: float | None = None) -> bool:
        """True when ``collection`` is loaded for search."""
        ...

    def schema_version(self, collection: str, deadline: float | None = None) -> int:
        """The row schema version of ``collection`` (``core.records.SCHEMA_FIELDS``): whether it stores the typed metadata."""
        ...


class ReindexIndex(Protocol):
    """What the reindex job asks of the index: collections to fill, their rows, and the alias swap at the end."""

    @property
    def stamp(self) -> ModelStamp:
        """The model this process fills new collections with."""
        ...

    def active_collection(self) -> str | None:
        """The collection the alias points at, or None (no model check)."""
        ...

    def ensure_active(self) -> str:
        """The active collection, created and aliased if there is none; model-checked."""
        ...

    def new_collection(self) -> str:
        """Create an empty, loaded collection stamped with this model; not yet aliased."""
        ...

    def run_collection(self, run_id: str) -> str:
        """The collection of a sharded run, created by whichever shard comes first."""
        ...

    def orphans(self) -> list[str]:
        """Collections of the alias's family that no alias points at (left by killed rebuilds)."""
        ...

    def drop(self, collection: str) -> None:
        """Drop a collection."""
        ...

    def schema_version(self, collection: str) -> int:
        """The row schema version of ``collection``."""
        ...

    def stamp_of(self, collection: str) -> ModelStamp | None:
        """The model stamp recorded on ``collection``."""
        ...

    def stored(self, collection: str) -> dict[str, tuple[str, str]]:
        """``id -> (content_hash, source)`` of every row."""
        ...

    def upsert(self, collection: str, rows: list[dict[str, Any]]) -> None:
        """Insert or replace rows by id."""
        ...

    def delete(self, collection: str, ids: Sequence[str]) -> int:
        """Delete ids; how many of them existed."""
        ...

    def copy_rows(self, from_collection: str, to_collection: str, ids: Sequence[str], origins: Mapping[str, str]) -> list[str]:
        """Copy the rows of ``ids`` that ``from_collection`` holds into ``to_collection``; the ids copied."""
        ...

    def count(self, collection: str, *, expression: str = "") -> int:
        """Number of rows (that match ``expression``, when given)."""
        ...

    def duplicated(self, collection: str, ids: Sequence[str]) -> list[str]:
        """The ids among ``ids`` (each held by some row) that more than one row holds, sorted."""
        ...

    def seal(self, collection: str) -> bool:
        """Flush and wait until the HNSW index covers every row; True when it does in time."""
        ...

    def promote(self, collection: str, keep_previous: bool = True) -> tuple[str | None, list[str]]:
        """Swap the alias to ``collection``, keeping the replaced one for rollback; the replaced and the dropped collections."""
        ...


class VectorIndex(SearchIndex, ReindexIndex, Protocol):
    """Everything the engine and the job ask of the index: what ``core.index.ImageIndex`` offers both."""
