"""Pages of a search: the opaque ``page_token``, the maximum depth, and a stable order across pages.

A search answers one page of ``top_k`` hits. Its ``next_page_token`` carries what the next page
needs, and nothing the server must remember:

- the collection that answered (after an alias swap to another collection the token is refused
  with ``FAILED_PRECONDITION``: the ranking it continues no longer exists);
- a digest of the request's identity, everything but ``top_k`` and ``page_token`` (another query,
  filter, ``min_score``, cut-off or flag: ``INVALID_ARGUMENT``);
- the score and id of the last hit returned (the cursor), and where it stood in the ranking its
  search saw (the offset).

Order: by descending score, ties by id. Each page asks the index for ``offset + top_k`` hits and
a few more (``MARGIN``), sorts them by ``(-score, id)`` and returns the first ``top_k`` that come
after the cursor. The cursor, not the offset, decides where a page starts: a hit is never
returned twice, even when an approximate index finds on a deeper page (it searches with a larger
``ef``) a hit that ranks before the cursor; such a hit is left out. The next offset is where the
page's last hit stood in the ranking its search saw, so hits found before the cursor take no room
from the pages after it; they can make this page short, and it still has a next page while the
index returned every hit it was asked for (a page of none, even, when all of them ranked before
the cursor: the next one looks deeper). A group of equal scores that reaches past the hits
fetched may have members the index did not return; when a page would end inside such a group it
ends before it instead (a shorter page that still has a next page), so the next page sees the
group whole. Only a group of equal scores longer than the page itself is split as the index
returned it.

The maximum depth (``T2I_MAX_PAGE_DEPTH``): a request with a token whose ``offset + top_k`` passes
it is ``INVALID_ARGUMENT``; a page after which the same ``top_k`` would pass it has no
``next_page_token``.

The token is urlsafe base64 (no padding) of a version byte, a compact JSON body and a 12-byte
SHA-256 checksum of both: a damaged or foreign token is ``INVALID_ARGUMENT``. It is not secret
(it holds a collection name, an id and a score, which the response shows anyway) and not signed:
a client that forges one gets no more than a request of its own could ask for.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import dataclasses
import datetime
import enum
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import FailedPrecondition, InvalidArgument
from core.records import Hit
from search.cutoff import Cut

VERSION = 1
CHECKSUM_BYTES = 12
MAX_TOKEN_CHARS = 4096  # ids are at most 512 bytes: a token of ours stays far below
MILVUS_MAX_TOPK = 16384  # Milvus refuses a search limit above this
MARGIN = 8  # hits fetched beyond the page, to see whether more follow and where a group of equal scores ends
DEFAULT_MAX_DEPTH = 10_000
FIRST_PAGE = "start from the first page with an empty page_token"
NOT_OURS = f"page_token: not a token this server issued; {FIRST_PAGE}"


_SCALARS: list[tuple[type, Callable[[Any], Any]]] = [
    (enum.Enum, lambda value: value.value),
    (np.generic, lambda value: value.item()),
    (datetime.date, lambda value: value.isoformat()),  # datetimes too
    (set, lambda value: sorted(value, key=repr)),
    (frozenset, lambda value: sorted(value, key=repr)),
]


def _canonical(value: Any) -> Any:
    """A JSON-able stand-in for the values a request identity holds (``json.dumps``' ``default``)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if isinstance(value, np.ndarray):
        return {"f32": hashlib.sha256(np.ascontiguousarray(value, dtype=np.float32).tobytes()).hexdigest()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__, **{field.name: getattr(value, field.name) for field in dataclasses.fields(value)}}
    for kind, convert in _SCALARS:
        if isinstance(value, kind):
            return convert(value)
    raise TypeError(f"page identity: no canonical form for {type(value).__name__}")


def identity(kind: str, **parts: Any) -> str:
    """The digest of a request's identity: its kind (``text``, ``image``, ``search``) and every field but ``top_k`` and ``page_token``.

    Values may be str, numbers, None, bools, bytes (hashed), numpy arrays (hashed as float32),
    enums, dataclasses (``SearchFilter``), sequences and mappings of them.
    """
    text = json.dumps({"kind": kind, **parts}, default=_canonical, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Cursor:
    """Where the previous pages ended: how many hits they returned, and the last one's score and id."""

    collection: str
    digest: str
    offset: int
    score: float
    id: str


def _checksum(raw: bytes) -> bytes:
    return hashlib.sha256(b"t2i-page-token\0" + raw).digest()[:CHECKSUM_BYTES]


def encode_token(cursor: Cursor) -> str:
    """The opaque ``next_page_token`` for ``cursor``."""
    body = json.dumps({"c": cursor.collection, "d": cursor.digest, "o": cursor.offset, "s": cursor.score, "i": cursor.id}, separators=(",", ":"))
    raw = bytes([VERSION]) + body.encode()
    return base64.urlsafe_b64encode(raw + _checksum(raw)).rstrip(b"=").decode("ascii")


def decode_token(token: str) -> Cursor:
    """The cursor in a token ``encode_token`` made.

    Raises:
        InvalidArgument: the token is damaged, of another version, or not one of ours.
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument(f"page_token: {len(token):,} characters, longer than any token this server issues; {FIRST_PAGE}")
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(NOT_OURS) from exc
    raw, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
    if len(data) <= CHECKSUM_BYTES + 1 or checksum != _checksum(raw) or raw[0] != VERSION:
        raise InvalidArgument(NOT_OURS)
    try:
        body = json.loads(raw[1:].decode())
        cursor = Cursor(body["c"], body["d"], body["o"], body["s"], body["i"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(NOT_OURS) from exc
    valid = (
        isinstance(cursor.collection, str)
        and isinstance(cursor.digest, str)
        and isinstance(cursor.id, str)
        and type(cursor.offset) is int
        and cursor.offset > 0
        and isinstance(cursor.score, (int, float))
        and not isinstance(cursor.score, bool)
    )
    if not valid:
        raise InvalidArgument(NOT_OURS)
    return dataclasses.replace(cursor, score=float(cursor.score))


def _key(hit: Hit) -> tuple[float, str]:
    return (-hit.score, hit.id)


@dataclass(frozen=True)
class Page:
    """One page of hits, cut, and the token of the page after it ("" on the last page)."""

    hits: list[Hit]
    next_page_token: str
    cut: Cut  # what the caller's cut-off kept of the page


class Window:
    """The hits one request may return: after the cursor of its token (if any), at most ``top_k`` of them.

    The engine opens it before it searches (``open_window``: the token and the depth are checked
    before any work), asks the index for ``fetch`` hits, and hands them to ``finish``.
    """

    def __init__(self, digest: str, top_k: int, max_depth: int, cursor: Cursor | None) -> None:
        self.digest = digest
        self.top_k = top_k
        self.max_depth = max_depth
        self.cursor = cursor
        self.offset = cursor.offset if cursor else 0

    @property
    def pageable(self) -> bool:
        """True when a next page could still lie within the maximum depth."""
        return self.offset + 2 * self.top_k <= self.max_depth

    @property
    def fetch(self) -> int:
        """How many hits to ask the index for: up to the end of this page, plus ``MARGIN`` when a next page is possible."""
        return min(self.offset + self.top_k + (MARGIN if self.pageable else 0), MILVUS_MAX_TOPK)

    def check(self, collection: str) -> None:
        """Refuse a token issued by another collection than the one answering now.

        Raises:
            FailedPrecondition: the alias was swapped to another collection since the token was issued.
        """
        if self.cursor is not None and self.cursor.collection != collection:
            raise FailedPrecondition(
                f"page_token: the index was rebuilt since this page (collection {self.cursor.collection}, now {collection}): start again from the first page"
            )

    def finish(self, collection: str, hits: list[Hit], cut: Callable[[list[Hit]], Cut]) -> Page:
        """This request's page of ``hits`` (the index's answer to ``fetch``, after ``min_score``), cut by ``cut``, and the next token.

        ``cut`` is the request's cut-off (``search.cutoff.apply_cutoff``) on the page's hits; a page
        it shortened is the last one.

        Raises:
            FailedPrecondition: ``collection`` is not the one that issued the token.
        """
        self.check(collection)
        ordered = sorted(hits, key=_key)
        start = 0 if self.cursor is None else bisect.bisect_right(ordered, (-self.cursor.score, self.cursor.id), key=_key)
        ranked = ordered[start:]  # the hits after the cursor
        page = ranked[: self.top_k]
        whole = len(hits) < self.fetch  # the index returned all it had (after min_score): nothing lies beyond the fetch
        more = len(ranked) > self.top_k or not whole
        if page and more and self.pageable and not whole:
            page = _end_before_an_open_tie(page, ranked)
        done = cut(page)
        depth = start + len(done.hits)  # where this page ended in the ranking its search saw
        token = ""
        if more and done.dropped == 0 and self.pageable and depth + self.top_k <= self.max_depth:
            if done.hits:
                last = done.hits[-1]
                token = encode_token(Cursor(collection, self.digest, depth, float(last.score), last.id))
            elif self.cursor is not None and depth > self.offset:  # every hit fetched ranked before the cursor: look deeper
                token = encode_token(dataclasses.replace(self.cursor, offset=depth))
        return Page(done.hits, token, done)


def _end_before_an_open_tie(page: list[Hit], ranked: list[Hit]) -> list[Hit]:
    """``page`` without its tail of scores equal to the last hit fetched (the index may not have returned that group whole).

    A page made of such a group alone is kept as it is.
    """
    last = ranked[-1].score
    if page[-1].score != last:
        return page
    kept = [hit for hit in page if hit.score != last]
    return kept or page


def open_window(page_token: str, digest: str, top_k: int, max_depth: int) -> Window:
    """The window of a request whose identity is ``digest``: the first page, or the one ``page_token`` continues.

    Raises:
        InvalidArgument: the token is damaged or not ours, belongs to another request, or its page
            would pass the maximum depth.
    """
    if not page_token:
        return Window(digest, top_k, max_depth, None)
    cursor = decode_token(page_token)
    if cursor.digest != digest:
        raise InvalidArgument(
            "page_token: issued for another request (another query, filter, min_score, cut-off or flag); send the request "
            f"unchanged but for page_token (and top_k if you like), or {FIRST_PAGE}"
        )
    if cursor.offset + top_k > max_depth:
        raise InvalidArgument(
            f"page_token: this page would end at hit {cursor.offset + top_k:,}, past the server's maximum depth of {max_depth:,} "
            f"(T2I_MAX_PAGE_DEPTH); ask for at most {max(max_depth - cursor.offset, 0):,} hits, or narrow the search with a filter"
        )
    return Window(digest, top_k, max_depth, cursor)
