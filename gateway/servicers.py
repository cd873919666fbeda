"""gRPC servicers: protobuf in, engine call, protobuf out. Errors are mapped by the interceptor."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc

from core.errors import InvalidArgument, T2IError
from core.filters import SearchFilter
from gateway.errors import answer_for
from gateway.metadata import modified_time_of, to_conditions, to_message, write_metadata
from search.cutoff import Cutoff
from search.duplicates import DuplicatesQuery
from search.engine import SearchEngine, SearchResult, UpsertItem
from search.terms import Kind, Term, TermsQuery
from text2image.v1 import text2image_pb2 as pb
from text2image.v1 import text2image_pb2_grpc as pb_grpc


def deadline_of(context: grpc.aio.ServicerContext, default_s: float) -> float:
    """The request's deadline on the monotonic clock (the server default when the client set none)."""
    remaining = context.time_remaining()
    return time.monotonic() + (remaining if remaining is not None else default_s)


NO_FILTER = SearchFilter()


def to_filter(message: pb.Filter) -> SearchFilter:
    """The engine's filter for a protobuf ``Filter`` (an empty one, most requests', without converting its parts)."""
    if not message.ListFields():
        return NO_FILTER
    labels = message.labels
    metadata = to_conditions(message.metadata)
    return SearchFilter(tuple(labels.all_of), tuple(labels.any_of), tuple(labels.none_of), tuple(message.ids), message.uri_prefix, metadata)


CUTOFFS: dict[int, Cutoff] = {
    pb.CUTOFF_UNSPECIFIED: Cutoff.NONE,
    pb.CUTOFF_NONE: Cutoff.NONE,
    pb.CUTOFF_AUTOCUT: Cutoff.AUTOCUT,
    pb.CUTOFF_CALIBRATED: Cutoff.CALIBRATED,
}
CUTOFF_VALUES = {Cutoff.NONE: pb.CUTOFF_NONE, Cutoff.AUTOCUT: pb.CUTOFF_AUTOCUT, Cutoff.CALIBRATED: pb.CUTOFF_CALIBRATED}


def to_cutoff(value: int) -> Cutoff:
    """The engine's cut-off for a request's ``cutoff`` field.

    Raises:
        InvalidArgument: a value this server does not know (a newer client's, or a bad one), naming the field.
    """
    if value not in CUTOFFS:
        raise InvalidArgument(f"cutoff: unknown value {value}; use CUTOFF_NONE, CUTOFF_AUTOCUT or CUTOFF_CALIBRATED (or leave it unset)")
    return CUTOFFS[value]


def to_response(result: SearchResult) -> pb.SearchResponse:
    """A ``SearchResponse`` for an engine result (hits written in place: a list of ``Hit`` messages would be built, then copied)."""
    response = pb.SearchResponse(
        model_id=result.model_id,
        took_ms=result.took_ms,
        query_truncated=result.truncated,
        query_tokens=result.query_tokens,
        collection=result.collection,
        cutoff=CUTOFF_VALUES[result.cutoff],
        cutoff_score=result.cutoff_score,
        cutoff_dropped=result.cutoff_dropped,
        next_page_token=result.next_page_token,
    )
    add = response.hits.add
    for h in result.hits:
        hit = add(id=h.id, uri=h.uri, score=h.score, labels=h.labels)
        if h.metadata is not None:
            write_metadata(hit.metadata, h.metadata)
    return response


def to_term(message: pb.QueryTerm) -> Term:
    """The engine's term for a ``QueryTerm`` (kind None when none is set: the engine refuses it, naming the term)."""
    kind = message.WhichOneof("term")
    weight = message.weight if message.HasField("weight") else None
    if kind is None:
        return Term(None, weight=weight)
    return Term(Kind(kind), tuple(message.vector.values) if kind == "vector" else getattr(message, kind), weight)


def to_terms_query(request: pb.SearchRequest) -> TermsQuery:
    """The engine's combined search for a ``SearchRequest``."""
    min_score = request.min_score if request.HasField("min_score") else None
    terms = [to_term(term) for term in request.terms]
    return TermsQuery(terms, request.top_k, to_filter(request.filter), min_score, to_cutoff(request.cutoff), request.exclude_ids, request.page_token)


def converted(request: pb.SearchRequest) -> TermsQuery | T2IError:
    """``to_terms_query``, or the error it raised (one search of a batch that does not convert fails alone)."""
    try:
        return to_terms_query(request)
    except T2IError as exc:
        return exc


def to_batch_result(outcome: SearchResult | BaseException) -> pb.SearchBatchResult:
    """A search's response, or its error as the error interceptor would have answered that search alone."""
    if isinstance(outcome, SearchResult):
        return pb.SearchBatchResult(response=to_response(outcome))
    code, message = answer_for(outcome, "SearchBatch")
    return pb.SearchBatchResult(error=pb.SearchError(code=code.value[0], status=code.name, message=message))


class SearchServicer(pb_grpc.SearchServiceServicer):
    """``text2image.v1.SearchService``."""

    def __init__(self, engine: SearchEngine, default_timeout_s: float):
        self.engine = engine
        self.default_timeout_s = default_timeout_s

    async def SearchText(self, request: pb.SearchTextRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        min_score = request.min_score if request.HasField("min_score") else None
        cutoff = to_cutoff(request.cutoff)
        deadline = deadline_of(context, self.default_timeout_s)
        search_filter = to_filter(request.filter)
        return to_response(await self.engine.search_text(request.query, request.top_k, search_filter, min_score, deadline, cutoff, request.page_token))

    async def SearchImage(self, request: pb.SearchImageRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        source = request.WhichOneof("source")
        min_score = request.min_score if request.HasField("min_score") else None
        result = await self.engine.search_image(
            request.image if source == "image" else None,
            request.id if source == "id" else None,
            request.top_k,
            to_filter(request.filter),
            min_score,
            request.exclude_self,
            deadline_of(context, self.default_timeout_s),
            to_cutoff(request.cutoff),
            request.page_token,
        )
        return to_response(result)

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        return to_response(await self.engine.search(to_terms_query(request), deadline_of(context, self.default_timeout_s)))

    async def SearchBatch(self, request: pb.SearchBatchRequest, context: grpc.aio.ServicerContext) -> pb.SearchBatchResponse:
        outcomes = await self.engine.search_batch([converted(r) for r in request.requests], deadline_of(context, self.default_timeout_s))
        return pb.SearchBatchResponse(results=[to_batch_result(outcome) for outcome in outcomes])

    async def FindDuplicates(self, request: pb.FindDuplicatesRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.FindDuplicatesResponse]:
        min_score = request.min_score if request.HasField("min_score") else None
        query = DuplicatesQuery(min_score, to_filter(request.filter), request.max_neighbors, request.page_token, request.max_images)
        async for chunk in self.engine.find_duplicates(query, deadline_of(context, self.default_timeout_s)):
            yield pb.FindDuplicatesResponse(
                pairs=[pb.DuplicatePair(a=p.a, b=p.b, score=p.score) for p in chunk.pairs],
                scanned=chunk.scanned,
                total=chunk.total,
                next_page_token=chunk.next_page_token,
                collection=chunk.collection,
            )


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):
    """``text2image.v1.EmbeddingService``."""

    def __init__(self, engine: SearchEngine, default_timeout_s: float):
        self.engine = engine
        self.default_timeout_s = default_timeout_s

    async def EmbedText(self, request: pb.EmbedTextRequest, context: grpc.aio.ServicerContext) -> pb.EmbedTextResponse:
        result = await self.engine.embed_texts(list(request.texts), deadline_of(context, self.default_timeout_s))
        embeddings = [pb.Embedding(values=v.tolist(), truncated=t) for v, t in zip(result.vectors, result.truncated, strict=True)]
        return pb.EmbedTextResponse(embeddings=embeddings, model_id=result.model_id, dimension=result.vectors.shape[1])

    async def EmbedImage(self, request: pb.EmbedImageRequest, context: grpc.aio.ServicerContext) -> pb.EmbedImageResponse:
        result = await self.engine.embed_images(list(request.images), deadline_of(context, self.default_timeout_s))
        embeddings = [pb.Embedding(values=v.tolist()) for v in result.vectors]
        return pb.EmbedImageResponse(embeddings=embeddings, model_id=result.model_id, dimension=result.vectors.shape[1])


class IndexServicer(pb_grpc.IndexServiceServicer):
    """``text2image.v1.IndexService``."""

    def __init__(self, engine: SearchEngine, default_timeout_s: float):
        self.engine = engine
        self.default_timeout_s = default_timeout_s

    async def UpsertImages(self, request: pb.UpsertImagesRequest, context: grpc.aio.ServicerContext) -> pb.UpsertImagesResponse:
        items = [UpsertItem(i.id, i.content, i.uri, tuple(i.labels), modified_time_of(i)) for i in request.items]
        outcomes = await self.engine.upsert(items, deadline_of(context, self.default_timeout_s))
        results = [pb.ItemResult(id=o.id, ok=o.ok, error=o.error, unchanged=o.unchanged) for o in outcomes]
        upserted = sum(1 for o in outcomes if o.ok and not o.unchanged)
        return pb.UpsertImagesResponse(results=results, upserted=upserted, failed=sum(1 for o in outcomes if not o.ok))

    async def DeleteImages(self, request: pb.DeleteImagesRequest, context: grpc.aio.ServicerContext) -> pb.DeleteImagesResponse:
        return pb.DeleteImagesResponse(deleted=await self.engine.delete(list(request.ids), deadline_of(context, self.default_timeout_s)))

    async def GetIndexInfo(self, request: pb.GetIndexInfoRequest, context: grpc.aio.ServicerContext) -> pb.GetIndexInfoResponse:
        info = await self.engine.info(deadline_of(context, self.default_timeout_s))
        return pb.GetIndexInfoResponse(
            count=info.count,
            model_id=info.stamp.model_id,
            model_checksum=info.stamp.checksum,
            dimension=info.stamp.dimension,
            collection=info.collection,
            alias=info.alias,
            random_weights=self.engine.random_weights(info.stamp),
        )

    async def GetImages(self, request: pb.GetImagesRequest, context: grpc.aio.ServicerContext) -> pb.GetImagesResponse:
        records = await self.engine.images(list(request.ids), deadline_of(context, self.default_timeout_s))
        return pb.GetImagesResponse(images=[pb.ImageRecord(id=r.id, uri=r.uri, labels=r.labels, metadata=to_message(r.metadata)) for r in records])

    async def ListLabels(self, request: pb.ListLabelsRequest, context: grpc.aio.ServicerContext) -> pb.ListLabelsResponse:
        labels, complete = await self.engine.labels(request.max_rows, deadline_of(context, self.default_timeout_s))
        return pb.ListLabelsResponse(labels=labels, complete=complete)
