"""The Milvus adapter: one alias, collections stamped with the model that filled them.

Used by the gateway and the reindex job alike (``index_from_settings`` builds it). Every call has
an explicit timeout, cut to what is left of the caller's deadline, and Milvus failures become
domain errors by their code (``classify``), never by their text. Reads never write: ``active``
resolves the alias read-only, and only ``ensure_active`` (upserts, the reindex job) creates the
first collection and alias. Collections are named ``<alias>_<UTC timestamp>``; the alias points at
the active one, so a full rebuild fills a new collection and swaps the alias atomically. Searches
use Session consistency (read-your-writes for this client, no wait for global time ticks); hash
and count queries, which decide what to re-index, use Strong.

``ImageIndex`` is one class made of three parts: ``core.milvus_calls`` (the connection, timeouts,
retries and collection descriptions), ``core.milvus_collections`` (collections and aliases) and
``core.milvus_rows`` (row access). Import it, its constants and its factory from here.
"""

from __future__ import annotations

from collections.abc import Callable

from core.milvus_calls import ADMIN_TIMEOUT_S, IDEMPOTENT, RETRY_FIRST_S, RETRY_MAX_S
from core.milvus_collections import STAMP_TTL_S, MilvusCollections
from core.milvus_rows import MilvusRows
from core.records import HnswParams, IndexInfo, ModelStamp
from core.settings import Settings

__all__ = [
    "ADMIN_TIMEOUT_S",
    "IDEMPOTENT",
    "RETRY_FIRST_S",
    "RETRY_MAX_S",
    "STAMP_TTL_S",
    "HnswParams",
    "ImageIndex",
    "index_from_settings",
]


class ImageIndex(MilvusCollections, MilvusRows):
    """Synchronous Milvus access for one alias and one model stamp.

    Methods block; async callers run them on an executor of their own. Each takes an optional
    ``deadline`` (monotonic clock): the call's timeout is cut to the time left, and a deadline
    that has passed raises ``DeadlineExceeded`` without calling Milvus.
    """

    def info(self, deadline: float | None = None) -> IndexInfo:
        """Count, stamp and names of the active collection (count 0 and no collection before the first index)."""
        name = self.active(deadline)
        if name is None:
            return IndexInfo(0, self.stamp, "", self.alias)
        return IndexInfo(self.count(name, deadline), self.stamp_of(name, deadline) or self.stamp, name, self.alias)


def index_from_settings(settings: Settings, stamp: ModelStamp, serves: Callable[[ModelStamp], bool] | None = None, retry_budget_s: float = 0.0) -> ImageIndex:
    """The index that ``settings`` describe, filled with the model ``stamp`` (``serves``, ``retry_budget_s``: see ``ImageIndex``)."""
    return ImageIndex(
        settings.milvus_uri,
        settings.collection_alias,
        stamp,
        timeout_s=settings.milvus_timeout_s,
        token=settings.milvus_credentials(),
        hnsw=HnswParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef),
        serves=serves,
        tls_args=settings.milvus_tls_args(),
        retry_budget_s=retry_budget_s,
        credentials_from=settings.milvus_credentials_source(),
    )
