"""FindDuplicates: the pairs of indexed images whose embeddings are at least ``min_score`` alike.

The scan walks the collection (the images the filter admits) in id order, ``SCAN_BATCH`` vectors at
a time, and asks Milvus one range search per batch (nq = the batch): each image's neighbours at
cosine >= ``min_score`` among the admitted images, at most ``max_neighbors`` of them
(``MilvusRows.range_search``). HNSW is approximate and ``max_neighbors`` caps each image's list, so
the two images of a pair may not find each other alike: a pair is reported when either one's search
finds the other, once, with a < b, in the chunk of the image whose search found it first.

``max_images`` ends a stream early with a ``next_page_token`` that resumes after the last scanned
id. A resumed stream gives the same pairs as one long stream: a pair whose smaller id was scanned
by an earlier page, found now from its larger id only, is checked against the range search of the
smaller id again (one call for the batch), and reported only if that search did not find it, since
the earlier page reported it then. A collection changed between pages (upserts, deletes) may of
course repeat or miss pairs; a collection replaced by an alias swap is refused (FAILED_PRECONDITION).

Costs per batch of ``SCAN_BATCH`` images: one page of the query iterator and one range search (plus
one get and one range search when a resumed stream meets pairs across the resume point); per
stream: one count and the iterator's set-up. ``bench/duplicates.py`` measures it (docs/benchmarks.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from core.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from core.filters import SearchFilter, build_expression
from core.index_port import SearchIndex, VectorPages
from core.milvus_errors import CollectionMissing

T = TypeVar("T")
# What the engine runs a blocking index call with: ``run(operation, fn, *args)`` on its Milvus executor.
Runner = Callable[..., Awaitable[Any]]

DEFAULT_MIN_SCORE, LOWEST_MIN_SCORE = 0.95, 0.5
DEFAULT_NEIGHBORS, MAX_NEIGHBORS = 16, 1000
SCAN_BATCH = 256  # vectors per range search (nq) and rows per page of the scan
TOKEN_VERSION = 1


@dataclass(frozen=True)
class DuplicatesQuery:
    """A FindDuplicates request, as the engine takes it (``FindDuplicatesRequest``'s fields)."""

    min_score: float | None = None
    search_filter: SearchFilter = field(default_factory=SearchFilter)
    max_neighbors: int = 0
    page_token: str = ""
    max_images: int = 0


@dataclass(frozen=True)
class Pair:
    """Two near-duplicate images, ``a < b``, and their cosine."""

    a: str
    b: str
    score: float


@dataclass(frozen=True)
class Chunk:
    """One message of the stream: the pairs found in it (by a, then b) and the progress of the scan."""

    pairs: list[Pair]
    scanned: int
    total: int
    collection: str
    next_page_token: str = ""


@dataclass(frozen=True)
class Checked:
    """A validated query: the threshold, the neighbours per image, the Milvus expression and where to resume."""

    min_score: float
    neighbors: int
    expression: str
    max_images: int
    after: str | None
    token_collection: str | None


def check(query: DuplicatesQuery) -> Checked:
    """``query`` validated, with its defaults filled in and its page token read (not yet held to a collection).

    Raises:
        InvalidArgument: a value out of range or a damaged page token (each message names its field).
        ResourceExhausted: a filter with too many ids or labels (``core.filters``).
    """
    min_score = DEFAULT_MIN_SCORE if query.min_score is None else float(query.min_score)
    if not (math.isfinite(min_score) and LOWEST_MIN_SCORE <= min_score <= 1.0):
        raise InvalidArgument(f"min_score must be between {LOWEST_MIN_SCORE} and 1 (or unset: {DEFAULT_MIN_SCORE}); got {query.min_score}")
    if not 0 <= query.max_neighbors <= MAX_NEIGHBORS:
        raise InvalidArgument(f"max_neighbors must be between 1 and {MAX_NEIGHBORS} (or 0: {DEFAULT_NEIGHBORS}); got {query.max_neighbors}")
    if query.max_images < 0:
        raise InvalidArgument(f"max_images must be 0 (scan everything) or positive; got {query.max_images}")
    neighbors = query.max_neighbors or DEFAULT_NEIGHBORS
    expression = build_expression(query.search_filter)
    checked = Checked(min_score, neighbors, expression, query.max_images, None, None)
    if not query.page_token:
        return checked
    collection, after, fingerprint = read_token(query.page_token)
    if fingerprint != request_fingerprint(checked):
        raise InvalidArgument(
            "page_token: it belongs to a FindDuplicates request with another min_score, max_neighbors or filter; send those unchanged with it"
        )
    return Checked(min_score, neighbors, expression, query.max_images, after, collection)


def request_fingerprint(checked: Checked) -> str:
    """What a page token is bound to besides its collection: the threshold, the neighbours and the filter."""
    identity = json.dumps([float(np.float32(checked.min_score)), checked.neighbors, checked.expression])
    return hashlib.sha256(identity.encode()).hexdigest()[:24]


def make_token(collection: str, after: str, checked: Checked) -> str:
    """An opaque token that resumes the scan after ``after`` in ``collection``, for this request only."""
    body = json.dumps({"v": TOKEN_VERSION, "c": collection, "a": after, "r": request_fingerprint(checked)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def read_token(token: str) -> tuple[str, str, str]:
    """``(collection, after, fingerprint)`` of a token ``make_token`` wrote.

    Raises:
        InvalidArgument: anything else (damaged, truncated, or another RPC's token).
    """
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if raw.get("v") != TOKEN_VERSION or not all(isinstance(raw.get(key), str) for key in ("c", "a", "r")):
            raise ValueError(token)
        return raw["c"], raw["a"], raw["r"]
    except (ValueError, UnicodeDecodeError, binascii.Error, AttributeError) as exc:
        raise InvalidArgument(
            "page_token: not a FindDuplicates token (damaged, or another RPC's); send the next_page_token of a FindDuplicatesResponse, or none to start"
        ) from exc


def pair_of(one: str, other: str, score: float) -> Pair:
    return Pair(one, other, score) if one < other else Pair(other, one, score)


async def find_duplicates(
    query: DuplicatesQuery, index: SearchIndex, run: Runner, active: Callable[[float | None], Awaitable[str]], deadline: float | None, batch: int = SCAN_BATCH
) -> AsyncIterator[Chunk]:
    """The stream of ``query`` over the collection ``active`` resolves: chunks of pairs, the last with a ``next_page_token`` if the scan stopped early.

    Validates before any Milvus call; every call gets what is left of ``deadline``.

    Raises:
        InvalidArgument, ResourceExhausted: a bad request (``check``).
        FailedPrecondition: nothing indexed, a page token of another collection, or the collection dropped during the scan.
        DeadlineExceeded: the deadline passed.
    """
    checked = check(query)
    collection = await active(deadline)
    if checked.token_collection is not None and checked.token_collection != collection:
        raise FailedPrecondition(
            f"page_token: it belongs to collection {checked.token_collection}, but the alias now points at {collection} "
            "(a reindex swapped it); start the scan again without page_token"
        )
    try:
        async for chunk in _scan(checked, collection, index, run, deadline, batch):
            yield chunk
    except CollectionMissing as exc:
        raise FailedPrecondition(f"collection {collection} was dropped during the scan (an alias swap); start again without page_token") from exc


async def _scan(checked: Checked, collection: str, index: SearchIndex, run: Runner, deadline: float | None, batch: int) -> AsyncIterator[Chunk]:
    total = await run("count", index.count, collection, deadline, checked.expression)
    pages: VectorPages = await run("scan", index.scan_vectors, collection, checked.expression, checked.after, batch, deadline)
    reported: set[tuple[str, str]] = set()
    scanned, last = 0, checked.after
    try:
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded(f"the deadline passed after {scanned} of {total} images; page with max_images, or set a longer deadline")
            page = await run("scan", pages.next, deadline)
            overflow = bool(checked.max_images) and len(page) > checked.max_images - scanned
            if overflow:
                page = page[: checked.max_images - scanned]
            if not page:
                yield Chunk([], scanned, total, collection)  # the scan is over: the last chunk (possibly the only one)
                return
            found = await _batch_pairs(page, checked, collection, index, run, deadline, reported)
            scanned, last = scanned + len(page), page[-1][0]
            if checked.max_images and scanned >= checked.max_images:
                left = overflow or bool(await run("scan", pages.next, deadline))  # any row after the last scanned one: a token
                yield Chunk(found, scanned, total, collection, make_token(collection, last, checked) if left else "")
                return
            yield Chunk(found, scanned, total, collection)
    finally:
        pages.close()


async def _batch_pairs(
    page: Sequence[tuple[str, np.ndarray]],
    checked: Checked,
    collection: str,
    index: SearchIndex,
    run: Runner,
    deadline: float | None,
    reported: set[tuple[str, str]],
) -> list[Pair]:
    """The new pairs of one batch: from each image's range search, not reported before in this stream nor by an earlier page."""
    ids = [item_id for item_id, _ in page]
    vectors = np.stack([vector for _, vector in page])
    lists = await run("range_search", index.range_search, collection, vectors, checked.min_score, checked.neighbors + 1, checked.expression, deadline)
    found: dict[tuple[str, str], Pair] = {}
    earlier: dict[tuple[str, str], Pair] = {}  # found from b only, with a scanned by an earlier page of this walk
    for item_id, hits in zip(ids, lists, strict=True):
        for other, score in hits:
            if other == item_id:
                continue
            pair = pair_of(item_id, other, score)
            key = (pair.a, pair.b)
            if key in reported or key in found:
                continue
            if checked.after is not None and pair.a <= checked.after:
                earlier[key] = pair
            else:
                found[key] = pair
    if earlier:
        found.update(await _not_found_before(earlier, checked, collection, index, run, deadline))
    reported.update(found)
    return [found[key] for key in sorted(found)]


async def _not_found_before(
    earlier: dict[tuple[str, str], Pair], checked: Checked, collection: str, index: SearchIndex, run: Runner, deadline: float | None
) -> dict[tuple[str, str], Pair]:
    """The pairs of ``earlier`` that the range search of their smaller id does not find (so no earlier page reported them)."""
    smaller = sorted({a for a, _ in earlier})
    vectors = await run("get", index.vectors_of, collection, smaller, deadline)
    present = [a for a in smaller if a in vectors]
    if not present:
        return dict(earlier)  # deleted since: no page can have reported them
    lists = await run(
        "range_search",
        index.range_search,
        collection,
        np.stack([vectors[a] for a in present]),
        checked.min_score,
        checked.neighbors + 1,
        checked.expression,
        deadline,
    )
    seen = {(a, other) for a, hits in zip(present, lists, strict=True) for other, _ in hits}
    return {key: pair for key, pair in earlier.items() if key not in seen}
