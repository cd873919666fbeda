"""Row access of ``core.index.ImageIndex``: upserts, deletes, scans, gets, counts and searches within one collection.

Rows are written in the fields of their collection's row schema (``core.records.SCHEMA_FIELDS``).
Searches use Session consistency (read-your-writes for this client, no wait for global time
ticks); hash and count queries, which decide what to re-index, use Strong.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from core import milvus_search
from core.errors import FailedPrecondition, NotFound
from core.filters import literal, schema_needed
from core.milvus_calls import ADMIN_TIMEOUT_S, MilvusCalls
from core.milvus_port import MilvusPort, RowIterator
from core.records import MAX_ID_BYTES, NO_METADATA_ROW, SCHEMA_FIELDS, Hit, ImageMetadata, Record, hit_fields

_QUERY_PAGE = 1000
SEAL_POLL_FIRST_S, SEAL_POLL_MAX_S = 0.05, 1.0  # ``seal`` asks whether the index covers every row after these pauses, doubling


def _query_hashes(client: MilvusPort, timeout: float, collection: str, expression: str) -> dict[str, str]:
    rows = client.query(collection, filter=expression, output_fields=["id", "content_hash"], timeout=timeout, consistency_level="Strong")
    return {row["id"]: row["content_hash"] for row in rows}


def _get_rows(client: MilvusPort, timeout: float, collection: str, ids: list[str], fields: list[str]) -> list[Mapping[str, Any]]:
    return list(client.get(collection, ids=ids, output_fields=fields, timeout=timeout))


class MilvusRows(MilvusCalls):
    """The rows of one collection at a time: written, deleted, scanned, read and searched."""

    def require_schema(self, collection: str, expression: str, deadline: float | None = None) -> int:
        """The schema version of ``collection``, after checking that it has the fields ``expression`` filters on.

        Raises:
            FailedPrecondition: the expression filters on typed metadata and the collection predates it.
        """
        version = self.schema_version(collection, deadline)
        if schema_needed(expression) > version:
            raise FailedPrecondition(
                f"collection {collection} was built before typed metadata (schema {version}): run 't2i reindex --full' to filter on width, "
                "height, bytes, format or times"
            )
        return version

    def seal(self, collection: str, wait_s: float = 600.0) -> bool:
        """Flush, then wait until the HNSW index covers every row; True when it does within ``wait_s``.

        Until then Milvus 2.3 serves new rows from growing segments through an interim index whose
        recall does not follow ``ef``; a reindex seals at its end.
        """

        def flush_and_wait(client: MilvusPort, timeout: float) -> bool:
            client.flush(collection, timeout=timeout)
            end = self.clock() + wait_s
            pause = SEAL_POLL_FIRST_S  # a small run's segments are indexed (or skipped: too few rows) in well under a second
            index_name = client.list_indexes(collection)[0]
            while self.clock() < end:
                described = client.describe_index(collection, index_name, timeout=self.timeout_s)
                if int(described.get("pending_index_rows", 0)) == 0:
                    return True
                time.sleep(pause)
                pause = min(pause * 2, SEAL_POLL_MAX_S)
            return False

        return self._call("flush", flush_and_wait, limit=ADMIN_TIMEOUT_S)

    def upsert(self, collection: str, rows: list[dict[str, Any]], deadline: float | None = None) -> None:
        """Insert or replace rows by id; fields that the collection's schema version lacks are left out (an older collection keeps serving)."""
        if not rows:
            return
        fields = SCHEMA_FIELDS[self.schema_version(collection, deadline)]
        if any(key not in fields for key in rows[0]):
            rows = [{key: value for key, value in row.items() if key in fields} for row in rows]
        self._unwritten.discard(collection)
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
        """``id -> (content_hash, source)`` of every row (source "" in a schema-1 collection, or for rows written through the API).

        A collection this process created and has not written to since is empty (the first
        reindex into an alias): no scan, whose Strong queries wait for the server's time tick.
        """
        if collection in self._unwritten:
            return {}
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
            found = list({row["id"]: row for row in self._call("get", get)}.values())  # an id two rows hold is written once
            # Rows of an older schema get the fields it lacks as unknown (the typed metadata: read again at the next reindex).
            rows = [
                {**NO_METADATA_ROW, **{key: row[key] for key in ("id", *fields)}, "source": row.get("source") or origins.get(row["id"], "")} for row in found
            ]
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
        """The stored uri, labels and typed metadata of ``ids`` that are indexed, in the order asked."""
        fields = hit_fields(self.schema_version(collection, deadline))
        rows = self._call("get", lambda c, t: c.get(collection, ids=list(ids), output_fields=fields, timeout=t), deadline)
        found = {str(row["id"]): Record(str(row["id"]), str(row.get("uri", "")), list(row.get("labels") or []), ImageMetadata.of_row(row)) for row in rows}
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
        self.require_schema(collection, expression, deadline)
        rows = self._call(
            "count", lambda c, t: c.query(collection, filter=expression, output_fields=["count(*)"], timeout=t, consistency_level="Strong"), deadline
        )
        return int(rows[0]["count(*)"])

    def duplicated(self, collection: str, ids: Sequence[str], deadline: float | None = None) -> list[str]:
        """The ids among ``ids`` (each held by some row) that more than one row holds, sorted.

        Milvus keeps every row written under a primary key until a delete covers it, and counts
        each, while reads by id show one. Milvus 2.3.5 has been seen to bring back the replaced
        version of a row after an upsert; ``count(*)`` over halves of ``ids`` finds such ids in
        about d·log₂(n) counts for d of them.
        """
        found: list[str] = []
        groups = [list(ids[start : start + _QUERY_PAGE]) for start in range(0, len(ids), _QUERY_PAGE)]
        while groups:
            group = groups.pop()
            if self.count(collection, deadline, expression="id in " + json.dumps(group)) <= len(group):
                continue
            if len(group) == 1:
                found += group
            else:
                groups += [group[: len(group) // 2], group[len(group) // 2 :]]
        return sorted(found)

    def search(
        self,
        collection: str,
        vector: np.ndarray,
        top_k: int,
        expression: str = "",
        min_score: float | None = None,
        deadline: float | None = None,
    ) -> list[Hit]:
        """Nearest neighbours by cosine similarity, best first (with their typed metadata, in a collection that stores it)."""
        fields = hit_fields(self.require_schema(collection, expression, deadline))
        params = {"metric_type": "COSINE", "params": {"ef": max(self.hnsw.ef, top_k)}}
        data = [vector.astype(np.float32).tolist()]
        result = self._call(
            "search",
            lambda c, t: milvus_search.search(c, collection, data=data, limit=top_k, filter=expression, output_fields=fields, search_params=params, timeout=t),
            deadline,
        )
        hits = [
            Hit(str(r["id"]), r["entity"].get("uri", ""), float(r["distance"]), list(r["entity"].get("labels") or []), ImageMetadata.of_row(r["entity"]))
            for r in result[0]
        ]
        return [h for h in hits if min_score is None or h.score >= min_score]

    def scan_vectors(
        self, collection: str, expression: str = "", after: str | None = None, batch: int = _QUERY_PAGE, deadline: float | None = None
    ) -> VectorScan:
        """An open scan of the rows (that match ``expression``) whose id sorts after ``after``, in id order; close it.

        One query iterator for the whole scan: pymilvus sets each iterator up with a query that waits
        for the server's time tick (about a second on Milvus 2.3), so a scan that resumes anywhere
        (FindDuplicates) opens one per stream, not one per page. Milvus returns its pages in primary
        key order (UTF-8 byte order, which is Python's order of ``str``), some shorter than ``batch``.
        """
        self.require_schema(collection, expression, deadline)
        resume = f"id > {literal(after, MAX_ID_BYTES, 'id')}" if after is not None else ""
        condition = " and ".join(f"({part})" for part in (expression, resume) if part)
        iterator = self._call(
            "scan",
            lambda c, t: c.query_iterator(collection, batch_size=batch, filter=condition, output_fields=["id", "vector"], timeout=t),
            deadline,
        )
        return VectorScan(self, iterator)

    def vectors_of(self, collection: str, ids: Sequence[str], deadline: float | None = None) -> dict[str, np.ndarray]:
        """The stored vectors of the ``ids`` that are indexed."""
        rows = self._call("get", lambda c, t: c.get(collection, ids=list(ids), output_fields=["vector"], timeout=t), deadline) if ids else []
        return {str(row["id"]): np.asarray(row["vector"], dtype=np.float32) for row in rows}

    def range_search(
        self, collection: str, vectors: np.ndarray, min_score: float, limit: int, expression: str = "", deadline: float | None = None
    ) -> list[list[tuple[str, float]]]:
        """For each of ``vectors`` (one call, nq = len(vectors)), up to ``limit`` ``(id, cosine)`` of rows at cosine >= ``min_score``, best first.

        A Milvus 2.3 range search keeps ``radius < score <= range_filter`` for COSINE (and IP), so the
        radius is the float32 just below ``min_score``: a score equal to it counts (scores are float32;
        measured on the server, the congruence suite holds the fake to it). No ``range_filter``: the
        upper bound stays open, since identical images score 1.0 give or take a rounding.
        """
        radius = float(np.nextafter(np.float32(min_score), np.float32(-2.0)))
        params = {"metric_type": "COSINE", "params": {"ef": max(self.hnsw.ef, limit), "radius": radius}}
        data = vectors.astype(np.float32).tolist()
        result = self._call(
            "range search",
            lambda c, t: c.search(collection, data=data, limit=limit, filter=expression, output_fields=[], search_params=params, timeout=t),
            deadline,
        )
        floor = np.float32(min_score)
        return [[(str(r["id"]), float(r["distance"])) for r in hits if np.float32(r["distance"]) >= floor] for hits in result]


class VectorScan:
    """The pages of ``MilvusRows.scan_vectors``: ``(id, vector)`` rows in id order, until an empty page."""

    def __init__(self, rows: MilvusRows, iterator: RowIterator):
        self._rows = rows
        self._iterator = iterator

    def next(self, deadline: float | None = None) -> list[tuple[str, np.ndarray]]:
        """The next page (empty when the scan is over)."""
        page = self._rows._call("scan", lambda c, t: self._iterator.next(), deadline)
        return [(str(row["id"]), np.asarray(row["vector"], dtype=np.float32)) for row in page]

    def close(self) -> None:
        """Release the iterator on the server."""
        self._iterator.close()
