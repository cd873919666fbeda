"""The Milvus adapter: one alias, collections stamped with the model that filled them.

Used by the gateway and the reindex job alike. Every call has an explicit timeout, runs off the
event loop in a thread when called from async code, and turns Milvus failures into domain errors.
Collections are named ``<alias>_<UTC timestamp>``; the alias points at the active one, so a full
rebuild fills a new collection and swaps the alias atomically. Searches use Session consistency
(read-your-writes for this client, no wait for global time ticks); hash and count queries, which
decide what to re-index, use Strong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from inference.errors import FailedPrecondition, NotFound, Unavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_ID_BYTES = 512
MAX_URI_BYTES = 2048
MAX_LABELS = 32
MAX_LABEL_BYTES = 128
_QUERY_PAGE = 1000
ADMIN_TIMEOUT_S = 60.0  # creating and loading a collection is rare and slower than a query


class CollectionMissing(Unavailable):
    """The collection named in a call no longer exists (a full reindex swapped the alias and dropped it)."""


@dataclass(frozen=True)
class ModelStamp:
    """The model recorded on a collection: vectors from different models are not comparable."""

    model_id: str
    checksum: str
    dimension: int

    def describe(self) -> str:
        """JSON for the collection description."""
        return json.dumps({"model_id": self.model_id, "model_checksum": self.checksum, "dimension": self.dimension})

    @classmethod
    def parse(cls, description: str) -> ModelStamp | None:
        """The stamp in a collection description, or None if it has none."""
        try:
            raw = json.loads(description)
            return cls(raw["model_id"], raw["model_checksum"], int(raw["dimension"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    uri: str
    score: float
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


def make_row(item_id: str, vector: np.ndarray, uri: str, labels: Sequence[str], content_hash: str) -> dict[str, Any]:
    """A Milvus row in this project's schema."""
    return {"id": item_id, "vector": vector.astype(np.float32).tolist(), "uri": uri, "labels": list(labels), "content_hash": content_hash}


class ImageIndex:
    """Synchronous Milvus access for one alias and one model stamp."""

    def __init__(self, uri: str, alias: str, stamp: ModelStamp, timeout_s: float = 5.0, token: str = "", hnsw: HnswParams = HnswParams()):
        """Describe the index; the connection opens on first use, so Milvus may start later."""
        self.uri = uri
        self.alias = alias
        self.stamp = stamp
        self.timeout_s = timeout_s
        self.token = token
        self.hnsw = hnsw
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()
        self._ensure_lock = threading.Lock()
        self._checked: str | None = None
        self._recent: tuple[str, float] | None = None

    # -- plumbing -------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[MilvusClient], T]) -> T:
        try:
            return fn(self._connect())
        except MilvusException as exc:
            text = str(exc).lower()
            if "collection not found" in text or "can't find collection" in text:
                raise CollectionMissing(f"Milvus collection gone ({what}); the alias {self.alias} was moved: retry") from exc
            if any(word in text for word in ("unavailable", "connect", "timeout", "deadline", "closed", "not ready")):
                raise Unavailable(f"Milvus at {self.uri} is unavailable ({what}): {exc.message}") from exc
            raise
        except Exception as exc:
            if exc.__class__.__name__ in ("_InactiveRpcError", "RpcError", "FutureTimeoutError", "TimeoutError"):
                raise Unavailable(f"Milvus at {self.uri} did not answer ({what}) within {self.timeout_s:.1f} s") from exc
            raise

    def _connect(self) -> MilvusClient:
        with self._lock:
            if self._client is None:
                try:
                    self._client = MilvusClient(uri=self.uri, token=self.token, timeout=self.timeout_s)
                except Exception as exc:  # noqa: BLE001 - any connect failure means unavailable
                    raise Unavailable(f"cannot connect to Milvus at {self.uri}: {exc}") from exc
            return self._client

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- collections and the alias --------------------------------------------------------------

    def new_collection(self) -> str:
        """Create an empty, loaded collection stamped with this model; not yet aliased."""
        name = f"{self.alias}_{time.strftime('%Y%m%d_%H%M%S', time.gmtime())}_{int(time.time() * 1000) % 1000:03d}"

        def create(client: MilvusClient) -> None:
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False, description=self.stamp.describe())
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.stamp.dimension)
            schema.add_field("uri", DataType.VARCHAR, max_length=MAX_URI_BYTES)
            schema.add_field("labels", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_LABELS, max_length=MAX_LABEL_BYTES)
            schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
            index = client.prepare_index_params()
            index.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": self.hnsw.m, "efConstruction": self.hnsw.ef_construction})
            client.create_collection(name, schema=schema, index_params=index, consistency_level="Session", timeout=ADMIN_TIMEOUT_S)
            client.load_collection(name, timeout=ADMIN_TIMEOUT_S)

        self._call("create collection", create)
        logger.info("created collection %s for %s", name, self.stamp.model_id)
        return name

    def active_collection(self) -> str | None:
        """The collection the alias points at, or None when there is no alias yet."""

        def describe(client: MilvusClient) -> str | None:
            try:
                return str(client.describe_alias(self.alias, timeout=self.timeout_s)["collection_name"])
            except MilvusException as exc:
                if "not exist" in str(exc).lower() or "not found" in str(exc).lower():
                    return None
                raise

        return self._call("describe alias", describe)

    def ensure_active(self) -> str:
        """The active collection, created and aliased if there is none; checks its model stamp.

        Raises:
            FailedPrecondition: the collection was filled by another model.
        """
        with self._ensure_lock:
            name = self._ensure_active()
            self._recent = (name, time.monotonic())
            return name

    def recent_active(self, max_age_s: float) -> str | None:
        """The collection ``ensure_active`` returned less than ``max_age_s`` ago, or None.

        Read paths use it to skip a Milvus round trip per request; a caller that then gets
        ``CollectionMissing`` calls ``ensure_active`` and retries.
        """
        recent = self._recent
        if recent is not None and time.monotonic() - recent[1] < max_age_s:
            return recent[0]
        return None

    def _ensure_active(self) -> str:
        name = self.active_collection()
        if name is None:
            name = self.new_collection()
            try:
                self._call("create alias", lambda c: c.create_alias(name, self.alias, timeout=self.timeout_s))
            except MilvusException:
                self.drop(name)  # another process created the alias first: use theirs
                name = self.active_collection()
                if name is None:
                    raise
        if self._checked != name:
            self.check_stamp(name)
            self._checked = name
        return name

    def stamp_of(self, collection: str) -> ModelStamp | None:
        """The model stamp recorded on ``collection``."""
        described = self._call("describe collection", lambda c: c.describe_collection(collection, timeout=self.timeout_s))
        return ModelStamp.parse(described.get("description", ""))

    def check_stamp(self, collection: str) -> None:
        """Raise ``FailedPrecondition`` unless ``collection`` was filled by this model."""
        stamp = self.stamp_of(collection)
        if stamp != self.stamp:
            found = f"{stamp.model_id} (checksum {stamp.checksum[:12]})" if stamp else "no recorded model"
            raise FailedPrecondition(
                f"collection {collection} behind alias {self.alias} holds vectors of {found}, but this service "
                f"uses {self.stamp.model_id} (checksum {self.stamp.checksum[:12]}); run 't2i reindex --full' with this model"
            )

    def swap_alias(self, collection: str) -> str | None:
        """Point the alias at ``collection`` atomically; returns the collection it pointed at before."""
        previous = self.active_collection()
        if previous is None:
            self._call("create alias", lambda c: c.create_alias(collection, self.alias, timeout=self.timeout_s))
        else:
            self._call("alter alias", lambda c: c.alter_alias(collection, self.alias, timeout=self.timeout_s))
        self._checked = None
        self._recent = None
        logger.info("alias %s now points at %s (was %s)", self.alias, collection, previous)
        return previous

    def orphans(self) -> list[str]:
        """Collections of this alias's family that the alias does not point at (left by killed rebuilds)."""
        active = self.active_collection()
        names = self._call("list collections", lambda c: c.list_collections(timeout=self.timeout_s))
        return [n for n in names if n.startswith(f"{self.alias}_") and n != active]

    def drop(self, collection: str) -> None:
        """Drop a collection."""
        self._call("drop collection", lambda c: c.drop_collection(collection, timeout=self.timeout_s))
        logger.info("dropped collection %s", collection)

    # -- data -----------------------------------------------------------------------------------

    def seal(self, collection: str, wait_s: float = 600.0) -> bool:
        """Flush, then wait until the HNSW index covers every row; True when it does within ``wait_s``.

        Until then Milvus 2.3 serves new rows from growing segments through an interim index whose
        recall does not follow ``ef``; a reindex seals at its end.
        """
        def flush_and_wait(client: MilvusClient) -> bool:
            client.flush(collection, timeout=ADMIN_TIMEOUT_S)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                described = client.describe_index(collection, client.list_indexes(collection)[0], timeout=self.timeout_s)
                if int(described.get("pending_index_rows", 0)) == 0:
                    return True
                time.sleep(1.0)
            return False

        return self._call("flush", flush_and_wait)

    def upsert(self, collection: str, rows: list[dict[str, Any]]) -> None:
        """Insert or replace rows by id."""
        if rows:
            self._call("upsert", lambda c: c.upsert(collection, rows, timeout=self.timeout_s * 4))

    def delete(self, collection: str, ids: Sequence[str]) -> int:
        """Delete ids; returns how many of them existed."""
        present = list(self.hashes(collection, ids))
        if present:
            self._call("delete", lambda c: c.delete(collection, ids=present, timeout=self.timeout_s))
        return len(present)

    def hashes(self, collection: str, ids: Iterable[str] | None = None) -> dict[str, str]:
        """``id -> content_hash`` of the given ids, or of every row when ids is None."""
        result: dict[str, str] = {}
        if ids is not None:
            wanted = list(ids)
            for start in range(0, len(wanted), _QUERY_PAGE):
                chunk = wanted[start : start + _QUERY_PAGE]
                expr = "id in " + json.dumps(chunk)
                rows = self._call("query", lambda c: c.query(collection, filter=expr, output_fields=["id", "content_hash"], timeout=self.timeout_s, consistency_level="Strong"))
                result.update({row["id"]: row["content_hash"] for row in rows})
            return result
        def scan(client: MilvusClient) -> None:
            iterator = client.query_iterator(collection, batch_size=_QUERY_PAGE, filter="", output_fields=["id", "content_hash"], timeout=self.timeout_s * 2, consistency_level="Strong")
            try:
                while rows := iterator.next():
                    result.update({row["id"]: row["content_hash"] for row in rows})
            finally:
                iterator.close()

        self._call("scan", scan)
        return result

    def vector_of(self, collection: str, item_id: str) -> np.ndarray:
        """The stored vector of ``item_id``.

        Raises:
            NotFound: no such id.
        """
        rows = self._call("get", lambda c: c.get(collection, ids=[item_id], output_fields=["vector"], timeout=self.timeout_s))
        if not rows:
            raise NotFound(f"no indexed image has id {item_id!r}")
        return np.asarray(rows[0]["vector"], dtype=np.float32)

    def count(self, collection: str) -> int:
        """Number of rows."""
        rows = self._call("count", lambda c: c.query(collection, filter="", output_fields=["count(*)"], timeout=self.timeout_s, consistency_level="Strong"))
        return int(rows[0]["count(*)"])

    def search(self, collection: str, vector: np.ndarray, top_k: int, expression: str = "", min_score: float | None = None) -> list[Hit]:
        """Nearest neighbours by cosine similarity, best first."""
        params = {"metric_type": "COSINE", "params": {"ef": max(self.hnsw.ef, top_k)}}
        result = self._call(
            "search",
            lambda c: c.search(collection, data=[vector.astype(np.float32).tolist()], limit=top_k, filter=expression,
                               output_fields=["uri", "labels"], search_params=params, timeout=self.timeout_s),
        )
        hits = [Hit(str(r["id"]), r["entity"].get("uri", ""), float(r["distance"]), list(r["entity"].get("labels") or [])) for r in result[0]]
        return [h for h in hits if min_score is None or h.score >= min_score]

    def info(self) -> IndexInfo:
        """Count, stamp and names of the active collection."""
        name = self.ensure_active()
        return IndexInfo(self.count(name), self.stamp_of(name) or self.stamp, name, self.alias)

    def loaded(self, collection: str) -> bool:
        """True when ``collection`` is loaded for search."""
        state = self._call("load state", lambda c: c.get_load_state(collection, timeout=self.timeout_s))
        return str(state.get("state")).endswith("Loaded")
