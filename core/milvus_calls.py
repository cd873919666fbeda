"""The plumbing under ``core.index.ImageIndex``: the connection, calls with timeouts and retries, and the collection descriptions.

Every call goes through ``MilvusCalls._call``: its timeout is cut to what is left of the caller's
deadline, a Milvus failure becomes a domain error by its code (``core.milvus_errors.classify``),
and an ``IDEMPOTENT`` call that met an outage is retried with capped backoff within
``retry_budget_s``. ``stamp_of`` and ``schema_version`` read what a collection's description
records (the model that filled it, its row schema), which collections (``core.milvus_collections``)
and rows (``core.milvus_rows``) both need.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from pymilvus import MilvusClient

from core.errors import DeadlineExceeded, FailedPrecondition, T2IError, Unavailable
from core.milvus_errors import classify
from core.milvus_port import MilvusPort
from core.records import SCHEMA_FIELDS, SCHEMA_VERSION, HnswParams, ModelStamp, schema_version_of

logger = logging.getLogger(__name__)

T = TypeVar("T")
ADMIN_TIMEOUT_S = 60.0  # creating and loading a collection is rare and slower than a query
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


class MilvusCalls:
    """One alias's connection and calls; the state that ``core.index.ImageIndex``'s parts share.

    Methods block. Each takes an optional ``deadline`` (monotonic clock): the call's timeout is cut
    to the time left, and a deadline that has passed raises ``DeadlineExceeded`` without calling Milvus.

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
        """Describe the index; the connection opens on first use, so Milvus may start later."""
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
        self._unwritten: set[str] = set()  # collections this process created and has not written to since: ``stored`` need not scan them
        self._recent: tuple[str, float] | None = None

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
