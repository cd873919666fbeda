"""The client's typed values: what goes into a request (``Term``, ``Query``, ``Filter``, ``ImageItem``)
and what comes back (``SearchResult`` with its ``Hit``s, ``Embeddings``, ``UpsertResult``...).

Results are frozen dataclasses built from the response messages; each one that answers a whole call
keeps that message as ``raw`` (left out of ``==`` and ``repr``) for fields this module does not map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from text2image.v1 import text2image_pb2 as pb

Cutoff = Literal["none", "autocut", "calibrated"]
CUTOFFS: dict[str | None, pb.Cutoff] = {None: pb.CUTOFF_UNSPECIFIED, "none": pb.CUTOFF_NONE, "autocut": pb.CUTOFF_AUTOCUT, "calibrated": pb.CUTOFF_CALIBRATED}
Range = tuple[int | None, int | None]
TimeSpan = tuple[datetime | None, datetime | None]


# --- What goes in -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One term of a combined query (``Client.search``): exactly one of text, image bytes, an indexed id or a vector.

    ``weight`` is finite and not 0; a negative weight pushes the term's concept down. The server embeds
    each term, L2-normalizes it and ranks by the cosine to the normalized weighted sum.
    """

    text: str | None = None
    image: bytes | None = None
    id: str | None = None
    vector: Sequence[float] | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        given = [name for name in ("text", "image", "id", "vector") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a Term is exactly one of text, image, id or vector; got {given or 'none'}")
        if not math.isfinite(self.weight) or self.weight == 0:
            raise ValueError(f"a Term's weight must be finite and not 0; got {self.weight}")

    def to_proto(self) -> pb.QueryTerm:
        """The ``QueryTerm`` message (an unset weight on the wire when it is 1)."""
        weight = None if self.weight == 1.0 else self.weight
        if self.text is not None:
            return pb.QueryTerm(text=self.text, weight=weight)
        if self.image is not None:
            return pb.QueryTerm(image=self.image, weight=weight)
        if self.id is not None:
            return pb.QueryTerm(id=self.id, weight=weight)
        return pb.QueryTerm(vector=pb.Vector(values=list(self.vector or ())), weight=weight)


def term(value: Term | str) -> Term:
    """A plain string is a text term of weight 1."""
    return Term(text=value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Filter:
    """Which indexed images a search may return; every condition given must hold.

    Labels: ``all_of`` (each present), ``any_of`` (one of them), ``none_of`` (none). ``ids`` restricts to
    those ids, ``uri_prefix`` to uris starting with it. The metadata ranges are inclusive ``(low, high)``
    pairs where ``None`` is open: ``width=(640, None)``, ``modified_time=(datetime(2024, 1, 1, tzinfo=UTC), None)``.
    """

    all_of: Sequence[str] = ()
    any_of: Sequence[str] = ()
    none_of: Sequence[str] = ()
    ids: Sequence[str] = ()
    uri_prefix: str = ""
    width: Range | None = None
    height: Range | None = None
    bytes: Range | None = None
    formats: Sequence[str] = ()
    modified_time: TimeSpan | None = None
    capture_time: TimeSpan | None = None

    def to_proto(self) -> pb.Filter:
        """The ``Filter`` message (the label and metadata parts only when they hold a condition)."""
        message = pb.Filter(ids=list(self.ids), uri_prefix=self.uri_prefix)
        if self.all_of or self.any_of or self.none_of:
            message.labels.CopyFrom(pb.LabelFilter(all_of=list(self.all_of), any_of=list(self.any_of), none_of=list(self.none_of)))
        ranges = (self.width, self.height, self.bytes, self.modified_time, self.capture_time)
        if self.formats or any(bounds is not None for bounds in ranges):
            metadata = pb.MetadataFilter(
                width=_int_range(self.width),
                height=_int_range(self.height),
                bytes=_int_range(self.bytes),
                formats=list(self.formats),
                modified_time=_time_range(self.modified_time),
                capture_time=_time_range(self.capture_time),
            )
            message.metadata.CopyFrom(metadata)
        return message


def filter_proto(value: Filter | pb.Filter | None) -> pb.Filter | None:
    """A ``Filter`` as its message; a message passes through."""
    return value.to_proto() if isinstance(value, Filter) else value


def _int_range(bounds: Range | None) -> pb.Int64Range | None:
    return None if bounds is None else pb.Int64Range(min=bounds[0], max=bounds[1])


def timestamp(moment: datetime) -> Timestamp:
    """A timezone-aware ``datetime`` as a ``Timestamp`` (a naive one is refused: its instant is unknown)."""
    if moment.tzinfo is None:
        raise ValueError(f"give a timezone-aware datetime (tzinfo=UTC, say); got the naive {moment.isoformat()}")
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def _time_range(span: TimeSpan | None) -> pb.TimeRange | None:
    if span is None:
        return None
    since, until = span
    return pb.TimeRange(since=timestamp(since) if since else None, until=timestamp(until) if until else None)


def cutoff_value(cutoff: Cutoff | None) -> pb.Cutoff:
    """``"none"``, ``"autocut"`` or ``"calibrated"`` (``None``: unset) as the enum's number."""
    if cutoff not in CUTOFFS:
        raise ValueError(f"cutoff must be None, 'none', 'autocut' or 'calibrated'; got {cutoff!r}")
    return CUTOFFS[cutoff]


@dataclass(frozen=True)
class Query:
    """One search of ``Client.search_batch``: the fields of ``Client.search``."""

    terms: Sequence[Term | str]
    top_k: int = 10
    filter: Filter | pb.Filter | None = None
    min_score: float | None = None
    cutoff: Cutoff | None = None
    exclude_ids: bool = False
    page_token: str = ""

    def to_proto(self) -> pb.SearchRequest:
        """The ``SearchRequest`` message."""
        return pb.SearchRequest(
            terms=[term(value).to_proto() for value in self.terms],
            top_k=self.top_k,
            filter=filter_proto(self.filter),
            min_score=self.min_score,
            cutoff=cutoff_value(self.cutoff),
            exclude_ids=self.exclude_ids,
            page_token=self.page_token,
        )


@dataclass(frozen=True)
class ImageItem:
    """One image for ``Client.upsert``: an existing id is replaced. ``modified_time`` (aware) is stored as metadata."""

    id: str
    content: bytes
    uri: str = ""
    labels: Sequence[str] = ()
    modified_time: datetime | None = None

    def to_proto(self) -> pb.ImageItem:
        """The ``ImageItem`` message."""
        stamp = timestamp(self.modified_time) if self.modified_time else None
        return pb.ImageItem(id=self.id, content=self.content, uri=self.uri, labels=list(self.labels), modified_time=stamp)


# --- What comes back --------------------------------------------------------------------------------


def _moment(message: pb.ImageMetadata, name: str) -> datetime | None:
    return getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


@dataclass(frozen=True)
class ImageMetadata:
    """What the server read from an image when it indexed it (times are UTC, ``None`` when unknown)."""

    width: int
    height: int
    bytes: int
    format: str
    modified_time: datetime | None
    capture_time: datetime | None

    @classmethod
    def from_proto(cls, message: pb.ImageMetadata) -> ImageMetadata:
        return cls(message.width, message.height, message.bytes, message.format, _moment(message, "modified_time"), _moment(message, "capture_time"))


def metadata_of(holder: pb.Hit | pb.ImageRecord) -> ImageMetadata | None:
    """The record's metadata, ``None`` for an image indexed before the metadata existed."""
    return ImageMetadata.from_proto(holder.metadata) if holder.HasField("metadata") else None


@dataclass(frozen=True)
class Hit:
    """One ranked image: its id, uri, cosine ``score`` (-1..1, higher is closer), labels and metadata."""

    id: str
    uri: str
    score: float
    labels: tuple[str, ...]
    metadata: ImageMetadata | None

    @classmethod
    def from_proto(cls, message: pb.Hit) -> Hit:
        return cls(message.id, message.uri, message.score, tuple(message.labels), metadata_of(message))


@dataclass(frozen=True)
class SearchResult:
    """The hits of one search, best first, and what the server says about them.

    ``next_page_token`` (empty on the last page) goes into ``page_token`` of the same call for the
    hits that follow; ``Client.iter_search_text`` and its siblings follow it for you.
    """

    hits: tuple[Hit, ...]
    model_id: str
    took_ms: float
    query_truncated: bool
    query_tokens: int
    collection: str
    cutoff: str
    cutoff_score: float | None
    cutoff_dropped: int
    next_page_token: str
    raw: pb.SearchResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: pb.SearchResponse) -> SearchResult:
        return cls(
            hits=tuple(Hit.from_proto(hit) for hit in message.hits),
            model_id=message.model_id,
            took_ms=message.took_ms,
            query_truncated=message.query_truncated,
            query_tokens=message.query_tokens,
            collection=message.collection,
            cutoff=pb.Cutoff.Name(message.cutoff).removeprefix("CUTOFF_").lower(),
            cutoff_score=message.cutoff_score if message.HasField("cutoff_score") else None,
            cutoff_dropped=message.cutoff_dropped,
            next_page_token=message.next_page_token,
            raw=message,
        )

    @property
    def ids(self) -> list[str]:
        """The hits' ids, best first."""
        return [hit.id for hit in self.hits]


@dataclass(frozen=True)
class SearchFailure:
    """Why one search of a batch failed (the status it would have had alone); the others are unaffected."""

    code: grpc.StatusCode
    message: str

    @classmethod
    def from_proto(cls, message: pb.SearchError) -> SearchFailure:
        code = next((status for status in grpc.StatusCode if status.value[0] == message.code), grpc.StatusCode.UNKNOWN)
        return cls(code, message.message)


def batch_results(message: pb.SearchBatchResponse) -> list[SearchResult | SearchFailure]:
    """One ``SearchResult`` or ``SearchFailure`` per search of the batch, in request order."""
    return [SearchResult.from_proto(item.response) if item.HasField("response") else SearchFailure.from_proto(item.error) for item in message.results]


@dataclass(frozen=True)
class Embeddings:
    """L2-normalized vectors in request order; ``truncated[i]`` says text ``i`` was cut to the model's context."""

    vectors: tuple[tuple[float, ...], ...]
    truncated: tuple[bool, ...]
    model_id: str
    dimension: int
    raw: pb.EmbedTextResponse | pb.EmbedImageResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: pb.EmbedTextResponse | pb.EmbedImageResponse) -> Embeddings:
        vectors = tuple(tuple(embedding.values) for embedding in message.embeddings)
        return cls(vectors, tuple(embedding.truncated for embedding in message.embeddings), message.model_id, message.dimension, message)


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one upserted image: stored (``ok``), unchanged, or the reason it was not."""

    id: str
    ok: bool
    error: str
    unchanged: bool


@dataclass(frozen=True)
class UpsertResult:
    """Per-item outcomes in request order, and how many were stored or failed."""

    results: tuple[ItemResult, ...]
    upserted: int
    failed: int
    raw: pb.UpsertImagesResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: pb.UpsertImagesResponse) -> UpsertResult:
        results = tuple(ItemResult(item.id, item.ok, item.error, item.unchanged) for item in message.results)
        return cls(results, message.upserted, message.failed, message)


@dataclass(frozen=True)
class IndexInfo:
    """The active index: its size, model, dimension, collection and alias."""

    count: int
    model_id: str
    model_checksum: str
    dimension: int
    collection: str
    alias: str
    random_weights: bool
    raw: pb.GetIndexInfoResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: pb.GetIndexInfoResponse) -> IndexInfo:
        return cls(
            message.count, message.model_id, message.model_checksum, message.dimension, message.collection, message.alias, message.random_weights, message
        )


@dataclass(frozen=True)
class ImageRecord:
    """What is stored for one indexed image."""

    id: str
    uri: str
    labels: tuple[str, ...]
    metadata: ImageMetadata | None

    @classmethod
    def from_proto(cls, message: pb.ImageRecord) -> ImageRecord:
        return cls(message.id, message.uri, tuple(message.labels), metadata_of(message))


@dataclass(frozen=True)
class Labels:
    """The labels in use, sorted; ``complete`` is false when the server scanned only part of the collection."""

    labels: tuple[str, ...]
    complete: bool


@dataclass(frozen=True)
class DuplicatePair:
    """Two near-duplicate images (``a < b``) and the cosine of their embeddings."""

    a: str
    b: str
    score: float


@dataclass(frozen=True)
class DuplicatesChunk:
    """One message of a ``FindDuplicates`` stream: its pairs, the scan's progress, and a token to go on."""

    pairs: tuple[DuplicatePair, ...]
    scanned: int
    total: int
    next_page_token: str
    collection: str

    @classmethod
    def from_proto(cls, message: pb.FindDuplicatesResponse) -> DuplicatesChunk:
        pairs = tuple(DuplicatePair(pair.a, pair.b, pair.score) for pair in message.pairs)
        return cls(pairs, message.scanned, message.total, message.next_page_token, message.collection)
