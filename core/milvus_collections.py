"""Collections and aliases of ``core.index.ImageIndex``: created stamped with their model, checked, aliased, promoted, rolled back, dropped.

Collections are named ``<alias>_<UTC timestamp>`` (or ``<alias>_run_<run id>`` for a sharded run);
the alias points at the active one, so a full rebuild fills a new collection and swaps the alias
atomically, and ``previous_alias`` keeps one rollback step. Reads never write: ``active`` resolves
the alias read-only, and only ``ensure_active`` creates the first collection and alias.
"""

from __future__ import annotations

import logging
import time

from pymilvus import DataType, MilvusException

from core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from core.milvus_calls import ADMIN_TIMEOUT_S, MilvusCalls
from core.milvus_errors import ALIAS_NOT_FOUND
from core.milvus_port import MilvusPort
from core.records import MAX_FORMAT_BYTES, MAX_ID_BYTES, MAX_LABEL_BYTES, MAX_LABELS, MAX_URI_BYTES, SCHEMA_VERSION, ModelStamp

logger = logging.getLogger(__name__)

STAMP_TTL_S = 10.0  # how long a collection's checked model stamp is trusted before it is read again


class MilvusCollections(MilvusCalls):
    """The collections of one alias's family, and the aliases that point at them."""

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
            for field in ("width", "height", "bytes", "modified_time", "capture_time"):  # schema 3: typed metadata (core.records.ImageMetadata)
                schema.add_field(field, DataType.INT64)
            schema.add_field("format", DataType.VARCHAR, max_length=MAX_FORMAT_BYTES)
            index = client.prepare_index_params()
            index.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": self.hnsw.m, "efConstruction": self.hnsw.ef_construction})
            client.create_collection(name, schema=schema, index_params=index, consistency_level="Session", timeout=timeout)
            client.load_collection(name, timeout=timeout)

        self._call("create collection", create, limit=ADMIN_TIMEOUT_S)
        self._schemas[name] = SCHEMA_VERSION
        self._unwritten.add(name)
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
        self._unwritten.discard(collection)
        logger.info("dropped collection %s", collection)

    def loaded(self, collection: str, deadline: float | None = None) -> bool:
        """True when ``collection`` is loaded for search."""
        state = self._call("load state", lambda c, t: c.get_load_state(collection, timeout=t), deadline)
        return str(state.get("state")).endswith("Loaded")
