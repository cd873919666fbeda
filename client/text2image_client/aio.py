"""``AsyncClient``: the asyncio client of the gateway's three services (the methods of ``Client``, awaited)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from text2image.v1 import text2image_pb2 as pb
from text2image.v1 import text2image_pb2_grpc as pb_grpc
from text2image_client import _requests as build
from text2image_client._channel import Tls, channel_options, open_aio_channel
from text2image_client.types import (
    Cutoff,
    DuplicatePair,
    DuplicatesChunk,
    Embeddings,
    Filter,
    Hit,
    ImageItem,
    ImageRecord,
    IndexInfo,
    Labels,
    Query,
    SearchFailure,
    SearchResult,
    Term,
    UpsertResult,
    batch_results,
)

FilterArg = Filter | pb.Filter | None


class AsyncClient:
    """Asyncio client for the gateway: the arguments and methods of ``Client``, as coroutines and async iterators.

    Open it inside the event loop that uses it (``async with AsyncClient(...) as client``). Errors are
    ``grpc.aio.AioRpcError`` (a ``grpc.RpcError``) with the gateway's status and message.
    """

    def __init__(
        self,
        address: str | Sequence[str],
        *,
        token: str | None = None,
        tls: Tls | None = None,
        timeout: float = 30.0,
        attempts: int = 4,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.timeout = timeout
        self.channel = open_aio_channel(address, token, tls, [*channel_options(attempts), *options])
        self.search_stub = pb_grpc.SearchServiceStub(self.channel)
        self.embedding_stub = pb_grpc.EmbeddingServiceStub(self.channel)
        self.index_stub = pb_grpc.IndexServiceStub(self.channel)

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    # --- Search -------------------------------------------------------------------------------------

    async def search_text(
        self,
        query: str,
        top_k: int = 10,
        *,
        filter: FilterArg = None,
        min_score: float | None = None,
        cutoff: Cutoff | None = None,
        page_token: str = "",
        timeout: float | None = None,
    ) -> SearchResult:
        """Images ranked by similarity to a sentence (``SearchText``)."""
        request = build.search_text(query, top_k, filter, min_score, cutoff, page_token)
        return SearchResult.from_proto(await self.search_stub.SearchText(request, timeout=self._deadline(timeout)))

    async def search_image(
        self,
        image: bytes | None = None,
        top_k: int = 10,
        *,
        id: str | None = None,
        filter: FilterArg = None,
        min_score: float | None = None,
        exclude_self: bool = False,
        cutoff: Cutoff | None = None,
        page_token: str = "",
        timeout: float | None = None,
    ) -> SearchResult:
        """Images ranked by similarity to image bytes or to an indexed image (``id=``) (``SearchImage``)."""
        request = build.search_image(image, id, top_k, filter, min_score, exclude_self, cutoff, page_token)
        return SearchResult.from_proto(await self.search_stub.SearchImage(request, timeout=self._deadline(timeout)))

    async def search(
        self,
        terms: Sequence[Term | str] | Term | str,
        top_k: int = 10,
        *,
        filter: FilterArg = None,
        min_score: float | None = None,
        cutoff: Cutoff | None = None,
        exclude_ids: bool = False,
        page_token: str = "",
        timeout: float | None = None,
    ) -> SearchResult:
        """Images ranked by a weighted sum of terms (``Search``)."""
        request = build.search(terms, top_k, filter, min_score, cutoff, exclude_ids, page_token)
        return SearchResult.from_proto(await self.search_stub.Search(request, timeout=self._deadline(timeout)))

    async def search_batch(self, queries: Sequence[Query], *, timeout: float | None = None) -> list[SearchResult | SearchFailure]:
        """Several searches in one call (``SearchBatch``): a result or a failure per query, in order."""
        request = pb.SearchBatchRequest(requests=[query.to_proto() for query in queries])
        return batch_results(await self.search_stub.SearchBatch(request, timeout=self._deadline(timeout)))

    # --- Pages --------------------------------------------------------------------------------------

    async def pages(
        self, call: Callable[[int, str], Awaitable[SearchResult]], page_size: int = 100, max_results: int | None = None
    ) -> AsyncIterator[SearchResult]:
        """The pages of a search: ``await call(top_k, page_token)`` with each ``next_page_token``, until the last page or ``max_results``."""
        page_size, max_results = build.page_sizes(page_size, max_results)
        seen, token = 0, ""
        while (top_k := build.next_top_k(page_size, max_results, seen)) > 0:
            page = await call(top_k, token)
            yield page
            seen += len(page.hits)
            token = page.next_page_token
            if not token:  # a page may be short, even empty, and still have a token (search.pages): only an empty one ends
                return

    async def iter_search_text(self, query: str, page_size: int = 100, max_results: int | None = None, **fields: Any) -> AsyncIterator[Hit]:
        """Every hit of ``search_text(query, **fields)``, page after page (at most ``max_results``)."""
        async for page in self.pages(lambda top_k, token: self.search_text(query, top_k, page_token=token, **fields), page_size, max_results):
            for hit in page.hits:
                yield hit

    async def iter_search_image(
        self, image: bytes | None = None, page_size: int = 100, max_results: int | None = None, *, id: str | None = None, **fields: Any
    ) -> AsyncIterator[Hit]:
        """Every hit of ``search_image(image or id=, **fields)``, page after page (at most ``max_results``)."""
        async for page in self.pages(lambda top_k, token: self.search_image(image, top_k, id=id, page_token=token, **fields), page_size, max_results):
            for hit in page.hits:
                yield hit

    async def iter_search(
        self, terms: Sequence[Term | str] | Term | str, page_size: int = 100, max_results: int | None = None, **fields: Any
    ) -> AsyncIterator[Hit]:
        """Every hit of ``search(terms, **fields)``, page after page (at most ``max_results``)."""
        async for page in self.pages(lambda top_k, token: self.search(terms, top_k, page_token=token, **fields), page_size, max_results):
            for hit in page.hits:
                yield hit

    # --- Duplicates ---------------------------------------------------------------------------------

    async def duplicate_chunks(
        self,
        min_score: float | None = None,
        *,
        filter: FilterArg = None,
        max_neighbors: int = 0,
        max_images: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> AsyncIterator[DuplicatesChunk]:
        """The messages of one ``FindDuplicates`` stream."""
        request = build.find_duplicates(min_score, filter, max_neighbors, max_images, page_token)
        async for message in self.search_stub.FindDuplicates(request, timeout=self._deadline(timeout)):
            yield DuplicatesChunk.from_proto(message)

    async def find_duplicates(
        self, min_score: float | None = None, *, filter: FilterArg = None, max_neighbors: int = 0, max_images: int = 0, timeout: float | None = None
    ) -> AsyncIterator[DuplicatePair]:
        """Every near-duplicate pair, following the streams' tokens (see ``Client.find_duplicates``)."""
        token = ""
        while True:
            last = ""
            async for chunk in self.duplicate_chunks(
                min_score, filter=filter, max_neighbors=max_neighbors, max_images=max_images, page_token=token, timeout=timeout
            ):
                for pair in chunk.pairs:
                    yield pair
                last = chunk.next_page_token or last
            if not last:
                return
            token = last

    # --- Embeddings ---------------------------------------------------------------------------------

    async def embed_text(self, texts: Sequence[str], *, timeout: float | None = None) -> Embeddings:
        """Normalized text embeddings, in order (``EmbedText``)."""
        request = pb.EmbedTextRequest(texts=build.strings(texts, "embed_text"))
        return Embeddings.from_proto(await self.embedding_stub.EmbedText(request, timeout=self._deadline(timeout)))

    async def embed_image(self, images: Sequence[bytes], *, timeout: float | None = None) -> Embeddings:
        """Normalized image embeddings, in order (``EmbedImage``)."""
        if isinstance(images, bytes):
            raise TypeError("embed_image takes a list of encoded images; wrap one in a list")
        request = pb.EmbedImageRequest(images=list(images))
        return Embeddings.from_proto(await self.embedding_stub.EmbedImage(request, timeout=self._deadline(timeout)))

    # --- The index ----------------------------------------------------------------------------------

    async def upsert(self, items: Sequence[ImageItem | pb.ImageItem], *, timeout: float | None = None) -> UpsertResult:
        """Add or replace images (``UpsertImages``). Needs a write token."""
        return UpsertResult.from_proto(await self.index_stub.UpsertImages(build.upsert(items), timeout=self._deadline(timeout)))

    async def delete(self, ids: Sequence[str], *, timeout: float | None = None) -> int:
        """Remove images by id (``DeleteImages``); how many were there. Needs a write token."""
        request = pb.DeleteImagesRequest(ids=build.strings(ids, "delete"))
        return (await self.index_stub.DeleteImages(request, timeout=self._deadline(timeout))).deleted

    async def get_images(self, ids: Sequence[str], *, timeout: float | None = None) -> list[ImageRecord]:
        """The records of the ids that are indexed, in request order (``GetImages``)."""
        request = pb.GetImagesRequest(ids=build.strings(ids, "get_images"))
        return [ImageRecord.from_proto(image) for image in (await self.index_stub.GetImages(request, timeout=self._deadline(timeout))).images]

    async def info(self, *, timeout: float | None = None) -> IndexInfo:
        """Count, model and collection of the active index (``GetIndexInfo``)."""
        return IndexInfo.from_proto(await self.index_stub.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=self._deadline(timeout)))

    async def labels(self, max_rows: int = 0, *, timeout: float | None = None) -> Labels:
        """The labels in use (``ListLabels``)."""
        answer = await self.index_stub.ListLabels(pb.ListLabelsRequest(max_rows=max_rows), timeout=self._deadline(timeout))
        return Labels(tuple(answer.labels), answer.complete)

    # --- Lifetime -----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
