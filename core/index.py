"""The Milvus adapter: one alias, collections stamped with the model that filled them.

Used by the gateway and the reindex job alike (``index_from_settings`` builds it). Every call has
an explicit timeout, cut to what is left of the caller's deadline, and Milvus failures become
domain errors by their code (``classify``), never by their text. Reads never write: ``active``
resolves the alias read-only, and only ``ensure_active`` (upserts, the reindex job) creates the
first collection and alias. Collections are named ``<alias>_<UTC timestamp>``; the alias points at
the active one, so a full rebuild fills a new collection and swaps the alias atomically. Searches
use Session consistency (read-your-writes for this client, no wait for global time ticks); hash
and count queries, which decide what to re-index, use Strong.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from core.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, T2IError, Unavailable
from core.milvus_errors import ALIAS_NOT_FOUND, classify
from core.milvus_port import MilvusPort
from core.records import (
    MAX_ID_BYTES,
    MAX_LABEL_BYTES,
    MAX_LABELS,
    MAX_URI_BYTES,
    SCHEMA_FIELDS,
    SCHEMA_VERSION,
    Hit,
    HnswParams,
    IndexInfo,
    ModelStamp,
    Record,
    schema_version_of,
)
from core.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")
_QUERY_PAGE = 1000
ADMIN_TIMEOUT_S = 60.0  # creating and loading a collection is rare and slower than a query
STAMP_TTL_S = 10.0  # how long a collection's checked model stamp is trusted before it is read again
# Calls that may run twice without harm (reads, and writes by primary key), which a batch job retries
# through an outage (a disk busy for a few seconds made a reindex fail on one "scan").
IDEMPOTENT = frozenset(
    {
        "describe alias",
        "has collection",
        "describe collection",
        "list collections",
        "query",
        "scan",
        "get",
        "scan labels",
        "count",
        "search",
        "load state",
        "upsert",
        "delete",
        "flush",
    }
)
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 8.0


def _query_hashes(client: MilvusPort, timeout: float, collection: str, expression: str) -> dict[str, str]:
    rows = client.query(collection, filter=expression, output_fields=["id", "content_hash"], timeout=timeout, consistency_level="Strong")
    return {row["id"]: row["content_hash"] for row in rows}


def _get_rows(client: MilvusPort, timeout: float, collection: str, ids: list[str], fields: list[str]) -> list[Mapping[str, Any]]:
    return list(client.get(collection, ids=ids, output_fields=fields, timeout=timeout))


class ImageIndex:
    """Synchronous Milvus access for one alias and one model stamp.

    Methods block; async callers run them on an executor of their own. Each takes an optional
    ``deadline`` (monotonic clock): the call's timeout is cut to the time left, and a deadline
    that has passed raises ``DeadlineExceeded`` without calling Milvus.
    """

    def __init__(
        self,
        uri: str,
        alias: str,
        stamp: ModelStamp,
        timeout_s: float = 5.0,
        token: str = "",
        hnsw: HnswParams = HnswParams(),
        client: MilvusPort | None = None,
        clock: Callable[[], float] = time.monotonic,
        serves: Callable[[ModelStamp], bool] | None = None,
        tls_args: dict[str, str] | None = None,
        retry_budget_s: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        credentials_from: str = "",
    ):
        """Describe the index; the connection opens on first use, so Milvus may start later.

        Args:
            uri: Milvus server URI.
            alias: The alias queries go through; collections are named after it.
            stamp: The model this process fills new collections with.
            timeout_s: Timeout of one call (admin calls get ``ADMIN_TIMEOUT_S``).
            token: ``user:password`` when Milvus has auth on.
            hnsw: Index parameters.
            client: A client to use instead of connecting (tests).
            clock: Monotonic clock for deadlines and the reuse window (tests).
            serves: Which collection stamps this process can encode for (default: ``stamp`` only);
                a gateway serving several model versions during a rollout passes its catalog's.
            tls_args: pymilvus TLS arguments (``Settings.milvus_tls_args``).
            retry_budget_s: How long an idempotent call (``IDEMPOTENT``) that met an outage is
                retried, with capped backoff, before its error is raised; 0 (the gateway: fail fast
                within the request's deadline) never retries. Batch jobs set it (``T2I_MILVUS_RETRY_S``).
            sleep: Waits between attempts (tests).
            credentials_from: Where ``token`` was read from, named when Milvus refuses it
                (``Settings.milvus_credentials_source``); refused credentials are never retried.
        """
        self.uri = uri
        self.alias = alias
        self.stamp = stamp
        self.timeout_s = timeout_s
        self.token = token
        self.tls_args = tls_args or {}
        self.retry_budget_s = retry_budget_s
        self.sleep = sleep
        self.credentials_from = credentials_from or ("the token given to ImageIndex" if token else "")
        self.hnsw = hnsw
        self.clock = clock
        self._client: MilvusPort | None = client
        self._lock = threading.Lock()
        self._ensure_lock = threading.Lock()
        self.serves = serves or (lambda other: other == self.stamp)
        # Collections whose stamp was checked, and when: checked again after STAMP_TTL_S, because a
        # collection may be dropped and created again under the same name (a reused run id).
        self._stamps: dict[str, tuple[ModelStamp, float]] = {}
        self._schemas: dict[str, int] = {}  # row schema version by collection name (dropping a collection forgets it)
        self._recent: tuple[str, float] | None = None

    # -- plumbing -------------------------------------------------------------------------------

    def _timeout(self, what: str, deadline: float | None, limit: float | None = None) -> float:
        timeout = limit or self.timeout_s
        if deadline is None:
            return timeout
        left = deadline - self.clock()
        if left <= 0:
            raise DeadlineExceeded(f"deadline passed before Milvus was asked ({what})")
        return min(timeout, left)

    def _call(self, what: str, fn: Callable[[MilvusPort, float], T], deadline: float | None = None, limit: float | None = None) -> T:
        """Run ``fn(client, timeout)`` and turn Milvus failures into domain errors; idempotent calls are retried within ``retry_budget_s``."""
        if what not in IDEMPOTENT or self.retry_budget_s <= 0:
            return self._call_once(what, fn, deadline, limit)
        give_up = self.clock() + self.retry_budget_s
        pause = RETRY_FIRST_S
        while True:
            try:
                return self._call_once(what, fn, deadline, limit)
            except Unavailable as exc:
                now = self.clock()
                if now + pause > give_up or (deadline is not None and now + pause >= deadline):
                    raise
                logger.warning("%s; retrying in %.1f s (%.0f s of the retry budget left)", exc, pause, give_up - now)
                self.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)

    def _call_once(self, what: str, fn: Callable[[MilvusPort, float], T], deadline: float | None = None, limit: float | None = None) -> T:
        timeout = self._timeout(what, deadline, limit)
        try:
            return fn(self._connect(), timeout)
        except T2IError:
            raise
        except Exception as exc:
            error = classify(exc, what, self.uri, timeout, deadline, self.clock(), self.credentials_from)
            if error is None:
                raise
            raise error from exc

    def _connect(self) -> MilvusPort:
        with self._lock:
            if self._client is None:
                try:
                    self._client = MilvusClient(uri=self.uri, token=self.token, timeout=self.timeout_s, **self.tls_args)
                except Exception as exc:
                    error = classify(exc, "connect", self.uri, self.timeout_s, credentials_from=self.credentials_from)
                    if error is None:
                        raise
                    raise error from exc
            return self._client

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- collections and the alias --------------------------------------------------------------

    @property
    def previous_alias(self) -> str:
        """The alias that keeps the collection served before the last swap, for rollback."""
        return f"{self.alias}_previous"

    def new_collection(self, name: str | None = None) -> str:
        """Create an empty, loaded collection stamped with this model (named ``<alias>_<UTC time>`` by default); not yet aliased."""
        name = name or f"{self.alias}_{time.strftime('%Y%m%d_%H%M%S', time.gmtime())}_{int(time.time() * 1000) % 1000:03d}"

        def create(client: MilvusPort, timeout: float) -> None:
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False, description=self.stamp.describe())
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.stamp.dimension)
            schema.add_field("uri", DataType.VARCHAR, max_length=MAX_URI_BYTES)
            schema.add_field("labels", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_LABELS, max_length=MAX_LABEL_BYTES)
            schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
            schema.add_field("source", DataType.VARCHAR, max_length=MAX_URI_BYTES)  # schema 2
            index = client.prepare_index_params()
            index.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": self.hnsw.m, "efConstruction": self.hnsw.ef_construction})
            client.create_collection(name, schema=schema, index_params=index, consistency_level="Session", timeout=timeout)
            client.load_collection(name, timeout=timeout)

        self._call("create collection", create, limit=ADMIN_TIMEOUT_S)
        self._schemas[name] = SCHEMA_VERSION
        logger.info("created collection %s for %s", name, self.stamp.model_id)
        return name

    def run_collection(self, run_id: str, create: bool = True) -> str:
        """The collection of a sharded run, ``<alias>_run_<run_id>``: created by whichever shard comes first.

        Every shard of one run writes into it; ``promote`` puts it behind the alias when all are done.

        Raises:
            NotFound: without ``create``, the run has no collection yet.
            InvalidArgument: ``run_id`` is not letters, digits and ``_``/``-``.
            FailedPrecondition: the collection exists but holds another model's vectors.
        """
        if not run_id or not all(ch.isalnum() or ch in "_-" for ch in run_id) or len(run_id) > 64:
            raise InvalidArgument(f"run id {run_id!r} must be 1-64 letters, digits, '_' or '-' (a Job's name, say)")
        name = f"{self.alias}_run_{run_id.replace('-', '_')}"
        if not self._call("has collection", lambda c, t: c.has_collection(name, timeout=t)):
            if not create:
                raise NotFound(f"run {run_id!r} has no collection ({name}): run its shards first ('t2i reindex LOCATION --run-id {run_id} --shards N')")
            try:
                self.new_collection(name)
            except (MilvusException, Unavailable):
                if not self._call("has collection", lambda c, t: c.has_collection(name, timeout=t)):
                    raise
                logger.info("collection %s was created by another shard", name)
        # Another shard may have created it a moment ago and still be loading it: loading is idempotent and waits.
        self._call("load collection", lambda c, t: c.load_collection(name, timeout=t), limit=ADMIN_TIMEOUT_S)
        stamp = self.stamp_of(name)
        if stamp != self.stamp:
            raise FailedPrecondition(
                f"collection {name} of run {run_id!r} holds vectors of {stamp.model_id if stamp else 'no recorded model'}, not {self.stamp.model_id}; use another run id"
            )
        return name

    def _aliased(self, alias: str, deadline: float | None = None) -> str | None:
        def describe(client: MilvusPort, timeout: float) -> str | None:
            try:
                return str(client.describe_alias(alias, timeout=timeout)["collection_name"])
            except MilvusException as exc:
                if exc.code == ALIAS_NOT_FOUND:
                    return None
                raise

        return self._call("describe alias", describe, deadline)

    def active_collection(self, deadline: float | None = None) -> str | None:
        """The collection the alias points at, or None when there is no alias yet (no model check)."""
        return self._aliased(self.alias, deadline)

    def previous_collection(self) -> str | None:
        """The collection kept for rollback (behind ``previous_alias``), or None."""
        return self._aliased(self.previous_alias)

    def active(self, deadline: float | None = None) -> str | None:
        """The active collection, model-checked, or None when nothing was indexed yet. Never writes.

        Raises:
            FailedPrecondition: the collection was filled by another model.
        """
        name = self.active_collection(deadline)
        return None if name is None else self._checked_and_remembered(name, deadline)

    def ensure_active(self, deadline: float | None = None) -> str:
        """The active collection, created and aliased if there is none (writers only); model-checked.

        Raises:
            FailedPrecondition: the collection was filled by another model.
        """
        with self._ensure_lock:
            name = self.active_collection(deadline)
            if name is None:
                name = created = self.new_collection()  # ``created``: a name the lambda can close over as a str
                try:
                    self._call("create alias", lambda c, t: c.create_alias(created, self.alias, timeout=t))
                except (MilvusException, Unavailable):
                    self.drop(name)  # another process created the alias first: use theirs
                    name = self.active_collection(deadline)
                    if name is None:
                        raise
            return self._checked_and_remembered(name, deadline)

    def recent_active(self, max_age_s: float) -> str | None:
        """The collection ``active`` or ``ensure_active`` returned less than ``max_age_s`` ago, or None.

        Read paths use it to skip a Milvus round trip per request; a caller that then gets
        ``CollectionMissing`` resolves afresh and retries.
        """
        recent = self._recent
        if recent is not None and self.clock() - recent[1] < max_age_s:
            return recent[0]
        return None

    def _checked_and_remembered(self, name: str, deadline: float | None) -> str:
        """``name`` after its model stamp was checked (once per name), remembered for ``recent_active``."""
        checked = self._stamps.get(name)
        if checked is None or self.clock() - checked[1] >= STAMP_TTL_S:
            stamp = self.check_stamp(name, deadline)
            if len(self._stamps) >= 64:
                self._stamps.clear()
            self._stamps[name] = (stamp, self.clock())
        self._recent = (name, self.clock())
        return name

    def checked_stamp(self, collection: str) -> ModelStamp:
        """The stamp of a collection that ``active``, ``ensure_active`` or ``recent_active`` returned."""
        return self._stamps[collection][0]

    def stamp_of(self, collection: str, deadline: float | None = None) -> ModelStamp | None:
        """The model stamp recorded on ``collection``."""
        described = self._call("describe collection", lambda c, t: c.describe_collection(collection, timeout=t), deadline)
        self._schemas[collection] = schema_version_of(described.get("description", ""))
        return ModelStamp.parse(described.get("description", ""))

    def schema_version(self, collection: str, deadline: float | None = None) -> int:
        """The row schema version of ``collection`` (``core.records.SCHEMA_FIELDS``), read once per collection name."""
        if collection not in self._schemas:
            self.stamp_of(collection, deadline)
        version = self._schemas[collection]
        if version not in SCHEMA_FIELDS:
            raise FailedPrecondition(
                f"collection {collection} has row schema {version}, newer than this version of text2image-search knows ({SCHEMA_VERSION}): upgrade it"
            )
        return version

    def check_stamp(self, collection: str, deadline: float | None = None) -> ModelStamp:
        """The stamp of ``collection``; ``FailedPrecondition`` unless this process serves its model."""
        stamp = self.stamp_of(collection, deadline)
        if stamp is not None and self.serves(stamp):
            return stamp
        found = f"{stamp.model_id} (checksum {stamp.checksum[:12]})" if stamp else "no recorded model"
        raise FailedPrecondition(
            f"collection {collection} behind alias {self.alias} holds vectors of {found}, a model this service does not serve "
            f"(it fills new collections with {self.stamp.model_id}, checksum {self.stamp.checksum[:12]}); run 't2i reindex --full' "
            "with a served model, or export that model into the repository beside it"
        )

    def _point(self, alias: str, collection: str) -> str | None:
        """Point ``alias`` at ``collection`` atomically (creating it); returns what it pointed at before."""
        previous = self._aliased(alias)
        if previous is None:
            self._call("create alias", lambda c, t: c.create_alias(collection, alias, timeout=t))
        elif previous != collection:
            self._call("alter alias", lambda c, t: c.alter_alias(collection, alias, timeout=t))
        logger.info("alias %s now points at %s (was %s)", alias, collection, previous)
        return previous

    def swap_alias(self, collection: str) -> str | None:
        """Point the alias at ``collection`` atomically; returns the collection it pointed at before."""
        previous = self._point(self.alias, collection)
        self._recent = None
        return previous

    def promote(self, collection: str, keep_previous: bool = True) -> tuple[str | None, list[str]]:
        """Swap the alias to ``collection``; keep the collection it replaces behind ``previous_alias`` for rollback.

        The collection kept before that is dropped (one rollback step is kept), or, without
        ``keep_previous``, the replaced one too. Returns the replaced collection and the dropped ones.
        """
        older = self.previous_collection()
        if self.active_collection() == collection:
            return older, []  # promoted already (a finalize run twice): nothing to swap or drop
        previous = self.swap_alias(collection)
        dropped = []
        if previous is not None and previous != collection and keep_previous:
            self._point(self.previous_alias, previous)
        elif older is not None:
            self._call("drop alias", lambda c, t: c.drop_alias(self.previous_alias, timeout=t))
        for name in dict.fromkeys([older, None if keep_previous else previous]):
            if name is not None and name not in (collection, previous if keep_previous else None):
                self.drop(name)
                dropped.append(name)
        return previous, dropped

    def rollback(self) -> tuple[str, str]:
        """Swap the alias back to the kept previous collection (and keep the current one as previous).

        Returns ``(now active, now previous)``; rolling back twice rolls forward again.

        Raises:
            FailedPrecondition: there is no previous collection.
        """
        previous = self.previous_collection()
        if previous is None:
            raise FailedPrecondition(f"alias {self.alias} has no previous collection to roll back to ({self.previous_alias} does not exist)")
        current = self.swap_alias(previous)
        if current is not None and current != previous:
            self._point(self.previous_alias, current)
        return previous, current or ""

    def orphans(self) -> list[str]:
        """Collections of this alias's family that neither the alias nor the rollback alias points at (left by killed rebuilds)."""
        kept = {self.active_collection(), self.previous_collection()}
        names = self._call("list collections", lambda c, t: c.list_collections(timeout=t))
        return [n for n in names if n.startswith(f"{self.alias}_") and n not in kept]

    def family_stamps(self) -> dict[str, ModelStamp | None]:
        """The stamps of the active and the previous collection (what a model version may still be needed for)."""
        return {name: self.stamp_of(name) for name in (self.active_collection(), self.previous_collection()) if name is not None}

    def drop(self, collection: str) -> None:
        """Drop a collection."""
        self._call("drop collection", lambda c, t: c.drop_collection(collection, timeout=t), limit=ADMIN_TIMEOUT_S)
        self._schemas.pop(collection, None)
        logger.info("dropped collection %s", collection)

    # -- data -----------------------------------------------------------------------------------

    def seal(self, collection: str, wait_s: float = 600.0) -> bool:
        """Flush, then wait until the HNSW index covers every row; True when it does within ``wait_s``.

        Until then Milvus 2.3 serves new rows from growing segments through an interim index whose
        recall does not follow ``ef``; a reindex seals at its end.
        """

        def flush_and_wait(client: MilvusPort, timeout: float) -> bool:
            client.flush(collection, timeout=timeout)
            end = self.clock() + wait_s
            while self.clock() < end:
                described = client.describe_index(collection, client.list_indexes(collection)[0], timeout=self.timeout_s)
                if int(described.get("pending_index_rows", 0)) == 0:
                    return True
                time.sleep(1.0)
            return False

        return self._call("flush", flush_and_wait, limit=ADMIN_TIMEOUT_S)

    def upsert(self, collection: str, rows: list[dict[str, Any]], deadline: float | None = None) -> None:
        """Insert or replace rows by id; fields that the collection's schema version lacks are left out (an older collection keeps serving)."""
        if not rows:
            return
        fields = SCHEMA_FIELDS[self.schema_version(collection, deadline)]
        if any(key not in fields for key in rows[0]):
            rows = [{key: value for key, value in row.items() if key in fields} for row in rows]
        self._call("upsert", lambda c, t: c.upsert(collection, rows, timeout=t), deadline, limit=self.timeout_s * 4)

    def delete(self, collection: str, ids: Sequence[str], deadline: float | None = None) -> int:
        """Delete ids; returns how many of them existed."""
        present = list(self.hashes(collection, ids, deadline))
        if present:
            self._call("delete", lambda c, t: c.delete(collection, ids=present, timeout=t), deadline)
        return len(present)

    def hashes(self, collection: str, ids: Iterable[str] | None = None, deadline: float | None = None) -> dict[str, str]:
        """``id -> content_hash`` of the given ids, or of every row when ids is None."""
        result: dict[str, str] = {}
        if ids is not None:
            wanted = list(ids)
            for start in range(0, len(wanted), _QUERY_PAGE):
                query = functools.partial(_query_hashes, collection=collection, expression="id in " + json.dumps(wanted[start : start + _QUERY_PAGE]))
                result.update(self._call("query", query, deadline))
            return result

        def scan(client: MilvusPort, timeout: float) -> None:
            iterator = client.query_iterator(
                collection, batch_size=_QUERY_PAGE, filter="", output_fields=["id", "content_hash"], timeout=timeout, consistency_level="Strong"
            )
            try:
                while rows := iterator.next():
                    result.update({row["id"]: row["content_hash"] for row in rows})
            finally:
                iterator.close()

        self._call("scan", scan, deadline, limit=self.timeout_s * 2)
        return result

    def stored(self, collection: str, deadline: float | None = None) -> dict[str, tuple[str, str]]:
        """``id -> (content_hash, source)`` of every row (source "" in a schema-1 collection, or for rows written through the API)."""
        fields = ["id", "content_hash"] + (["source"] if self.schema_version(collection, deadline) >= 2 else [])
        result: dict[str, tuple[str, str]] = {}

        def scan(client: MilvusPort, timeout: float) -> None:
            result.clear()  # a retried scan starts over
            iterator = client.query_iterator(collection, batch_size=_QUERY_PAGE, filter="", output_fields=fields, timeout=timeout, consistency_level="Strong")
            try:
                while rows := iterator.next():
                    result.update({row["id"]: (row["content_hash"], sys.intern(row.get("source") or "")) for row in rows})
            finally:
                iterator.close()

        self._call("scan", scan, deadline, limit=self.timeout_s * 2)
        return result

    def copy_rows(self, from_collection: str, to_collection: str, ids: Sequence[str], origins: Mapping[str, str]) -> list[str]:
        """Copy the rows of ``ids`` that ``from_collection`` holds into ``to_collection``; returns the ids copied.

        A full rebuild carries over the rows of files it could not read this time, instead of
        losing them. ``origins`` gives the source to record on rows that record none (schema 1).
        """
        copied: list[str] = []
        fields = sorted(SCHEMA_FIELDS[self.schema_version(from_collection)] - {"id"})
        for start in range(0, len(ids), _QUERY_PAGE):
            get = functools.partial(_get_rows, collection=from_collection, ids=list(ids[start : start + _QUERY_PAGE]), fields=fields)
            found = self._call("get", get)
            rows = [{**{key: row[key] for key in ("id", *fields)}, "source": row.get("source") or origins.get(row["id"], "")} for row in found]
            self.upsert(to_collection, rows)
            copied += [row["id"] for row in rows]
        return copied

    def vectors(self, collection: str, deadline: float | None = None) -> tuple[list[str], np.ndarray, list[list[str]]]:
        """Every row's id, vector and labels (exact search for evaluations: memory grows with the collection)."""
        ids: list[str] = []
        vectors: list[list[float]] = []
        labels: list[list[str]] = []

        def scan(client: MilvusPort, timeout: float) -> None:
            for found in (ids, vectors, labels):  # a retried scan starts over
                found.clear()
            iterator = client.query_iterator(
                collection, batch_size=_QUERY_PAGE, filter="", output_fields=["id", "vector", "labels"], timeout=timeout, consistency_level="Strong"
            )
            try:
                while rows := iterator.next():
                    for row in rows:
                        ids.append(row["id"])
                        vectors.append(row["vector"])
                        labels.append(list(row["labels"] or []))
            finally:
                iterator.close()

        self._call("scan", scan, deadline, limit=self.timeout_s * 2)
        return ids, np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1), labels

    def vector_of(self, collection: str, item_id: str, deadline: float | None = None) -> np.ndarray:
        """The stored vector of ``item_id``.

        Raises:
            NotFound: no such id.
        """
        rows = self._call("get", lambda c, t: c.get(collection, ids=[item_id], output_fields=["vector"], timeout=t), deadline)
        if not rows:
            raise NotFound(f"no indexed image has id {item_id!r}")
        return np.asarray(rows[0]["vector"], dtype=np.float32)

    def records(self, collection: str, ids: Sequence[str], deadline: float | None = None) -> list[Record]:
        """The stored uri and labels of ``ids`` that are indexed, in the order asked."""
        rows = self._call("get", lambda c, t: c.get(collection, ids=list(ids), output_fields=["uri", "labels"], timeout=t), deadline)
        found = {str(row["id"]): Record(str(row["id"]), str(row.get("uri", "")), list(row.get("labels") or [])) for row in rows}
        return [found[item_id] for item_id in ids if item_id in found]

    def labels(self, collection: str, max_rows: int, deadline: float | None = None) -> tuple[list[str], bool]:
        """Distinct labels of the first ``max_rows`` rows (rounded up to a page), sorted, and whether that was every row."""
        seen: set[str] = set()

        def scan(client: MilvusPort, timeout: float) -> bool:
            iterator = client.query_iterator(collection, batch_size=min(_QUERY_PAGE, max_rows), filter="", output_fields=["labels"], timeout=timeout)
            scanned = 0
            try:
                while rows := iterator.next():
                    for row in rows:
                        seen.update(row.get("labels") or [])
                    scanned += len(rows)
                    if scanned >= max_rows:
                        return not iterator.next()
                return True
            finally:
                iterator.close()

        complete = self._call("scan labels", scan, deadline, limit=self.timeout_s * 4)
        return sorted(seen), complete

    def count(self, collection: str, deadline: float | None = None, expression: str = "") -> int:
        """Number of rows (that match ``expression``, a Milvus filter built by this project, when given)."""
        rows = self._call(
            "count", lambda c, t: c.query(collection, filter=expression, output_fields=["count(*)"], timeout=t, consistency_level="Strong"), deadline
        )
        return int(rows[0]["count(*)"])

    def search(
        self,
        collection: str,
        vector: np.ndarray,
        top_k: int,
        expression: str = "",
        min_score: float | None = None,
        deadline: float | None = None,
    ) -> list[Hit]:
        """Nearest neighbours by cosine similarity, best first."""
        params = {"metric_type": "COSINE", "params": {"ef": max(self.hnsw.ef, top_k)}}
        data = [vector.astype(np.float32).tolist()]
        result = self._call(
            "search",
            lambda c, t: c.search(collection, data=data, limit=top_k, filter=expression, output_fields=["uri", "labels"], search_params=params, timeout=t),
            deadline,
        )
        hits = [Hit(str(r["id"]), r["entity"].get("uri", ""), float(r["distance"]), list(r["entity"].get("labels") or [])) for r in result[0]]
        return [h for h in hits if min_score is None or h.score >= min_score]

    def info(self, deadline: float | None = None) -> IndexInfo:
        """Count, stamp and names of the active collection (count 0 and no collection before the first index)."""
        name = self.active(deadline)
        if name is None:
            return IndexInfo(0, self.stamp, "", self.alias)
        return IndexInfo(self.count(name, deadline), self.stamp_of(name, deadline) or self.stamp, name, self.alias)

    def loaded(self, collection: str, deadline: float | None = None) -> bool:
        """True when ``collection`` is loaded for search."""
        state = self._call("load state", lambda c, t: c.get_load_state(collection, timeout=t), deadline)
        return str(state.get("state")).endswith("Loaded")


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
