"""The search service's logic in plain async Python: validate, encode through Triton, ask Milvus.

The gateway's servicers only convert protobuf messages to and from these calls. Blocking Milvus
calls and image decoding run on two executors of their own (sized by ``T2I_MILVUS_THREADS`` and
``T2I_DECODE_THREADS``), so neither waits behind the other; every Milvus call gets what is left
of the request's deadline. Reads never write: with nothing indexed yet, searches answer
``FAILED_PRECONDITION`` and only upserts create the first collection. Every request is encoded
with the model version that filled the collection it reads or writes (``ModelCatalog``), so an
alias swap to a collection of a new model switches this gateway to that model with no failed
request and no query compared across models.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from core.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, T2IError
from core.filters import MAX_TIME_US, MIN_TIME_US, SearchFilter, build_expression
from core.index import index_from_settings
from core.index_port import SearchIndex
from core.metrics import downstream
from core.milvus_errors import CollectionMissing
from core.records import METADATA_SCHEMA, Hit, ImageMetadata, IndexInfo, ModelStamp, Record, item_hash, make_row
from core.settings import GatewaySettings
from core.tracing import span
from inference.encoder_port import Encoder, EncoderCatalog
from inference.images import ImageLimits, load_pixels, load_pixels_with_metadata
from inference.models import catalog_from_settings
from search.cache import CachedText, EmbeddingCache
from search.cutoff import Cut, Cutoff, apply_cutoff, threshold_for
from search.duplicates import SCAN_BATCH, Chunk, DuplicatesQuery, find_duplicates
from search.pages import DEFAULT_MAX_DEPTH, identity, open_window
from search.terms import Kind, Term, TermsQuery, check_dimensions, check_terms, combine, excluding, name, require_calibratable, reworded, token_report
from search.validation import MAX_QUERY_BYTES, check_item, require_batch, require_id, require_ids, require_min_score, require_query, require_top_k

logger = logging.getLogger(__name__)
T = TypeVar("T")
Prepared = dict[tuple[str, str], CachedText]  # (model checksum, bounded text) -> its embedding, encoded ahead (SearchBatch)

DEFAULT_LABEL_ROWS, MAX_LABEL_ROWS = 100_000, 1_000_000  # rows ListLabels scans
BATCH_TERMS_PER_SEARCH = 4  # a SearchBatch holds at most this many terms per search of max_batch, on average
NOTHING_INDEXED = "nothing indexed yet: run 't2i reindex PATH' or send UpsertImages"
TEXT_CHUNK = 32  # texts per Triton call when a SearchBatch encodes ahead (the CPU config's max_batch_size)


@dataclass(frozen=True)
class SearchResult:
    """Hits plus what the response reports about the query."""

    hits: list[Hit]
    collection: str
    took_ms: float
    model_id: str
    query_tokens: int = 0
    truncated: bool = False
    cutoff: Cutoff = Cutoff.NONE
    cutoff_score: float | None = None  # the lowest score a hit needed (None: nothing cut by rule)
    cutoff_dropped: int = 0  # hits the cut-off dropped
    next_page_token: str = ""  # "" on the last page (``search.pages``)

    @classmethod
    def of(
        cls, cut: Cut, collection: str, start: float, model_id: str, query_tokens: int = 0, truncated: bool = False, next_page_token: str = ""
    ) -> SearchResult:
        """The result of a search whose hits went through ``cut``, timed from ``start`` (``time.perf_counter``)."""
        took_ms = (time.perf_counter() - start) * 1000
        return cls(cut.hits, collection, took_ms, model_id, query_tokens, truncated, cut.cutoff, cut.score, cut.dropped, next_page_token)


@dataclass(frozen=True)
class Embeddings:
    """Vectors of one model, and which inputs were truncated (texts only)."""

    vectors: np.ndarray
    model_id: str
    truncated: list[bool]


@dataclass(frozen=True)
class UpsertItem:
    """One image to index."""

    id: str
    content: bytes
    uri: str
    labels: Sequence[str]
    modified_time: int | None = None  # microseconds since the epoch (ImageItem.modified_time); None: unknown


@dataclass(frozen=True)
class ItemOutcome:
    """What happened to one item of a batch."""

    id: str
    ok: bool
    error: str = ""
    unchanged: bool = False


class SearchEngine:
    """Search, embeddings and index changes over one Triton and one Milvus alias."""

    def __init__(
        self,
        models: EncoderCatalog,
        index: SearchIndex,
        max_top_k: int,
        max_batch: int,
        limits: ImageLimits,
        cache: EmbeddingCache | None = None,
        alias_refresh_s: float = 1.0,
        milvus_threads: int = 4,
        decode_threads: int = 2,
        max_query_bytes: int = MAX_QUERY_BYTES,
        max_page_depth: int = DEFAULT_MAX_DEPTH,
    ):
        """Wire the adapters, limits and the query-embedding cache together.

        Reads reuse the alias's collection for ``alias_refresh_s`` (0 resolves it on every request);
        writes always resolve it afresh, so an upsert never lands in a collection being replaced.
        """
        self.models = models
        self.alias_refresh_s = alias_refresh_s
        self.index = index
        self.cache = cache if cache is not None else EmbeddingCache(0)
        self.max_top_k = max_top_k
        self.max_batch = max_batch
        self.max_query_bytes = max_query_bytes
        self.max_page_depth = max_page_depth
        self.limits = limits
        self._milvus_pool = ThreadPoolExecutor(milvus_threads, thread_name_prefix="milvus")
        self._decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")

    def start(self) -> None:
        """Start the background work of the running loop: the model catalog's rescans (``close`` stops them)."""
        self.models.start()

    async def close(self) -> None:
        """Stop the rescans; close the Triton channel, the Milvus connection and the executors."""
        await self.models.close()
        self.index.close()
        self._milvus_pool.shutdown(wait=False, cancel_futures=True)
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

    async def _milvus(self, operation: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with downstream("milvus", operation):
            return await asyncio.get_running_loop().run_in_executor(self._milvus_pool, functools.partial(fn, *args, **kwargs))

    async def _maybe_active(self, deadline: float | None) -> str | None:
        """The active collection resolved afresh (read-only, model-checked), or None before the first index."""
        return await self._milvus("resolve", self.index.active, deadline)

    async def _active(self, deadline: float | None) -> str:
        """The active collection resolved afresh (read-only, model-checked)."""
        collection = await self._maybe_active(deadline)
        if collection is None:
            raise FailedPrecondition(NOTHING_INDEXED)
        return collection

    async def _resolve(self, deadline: float | None) -> str:
        """The collection reads go to: the recently resolved one, or the alias resolved (and model-checked) afresh."""
        return self.index.recent_active(self.alias_refresh_s) or await self._active(deadline)

    def _encoder_for(self, collection: str) -> Encoder:
        """The encoder of the model version that filled ``collection`` (resolved and model-checked before)."""
        stamp = self.index.checked_stamp(collection)
        encoder = self.models.for_stamp(stamp)
        if encoder is None:
            raise FailedPrecondition(
                f"collection {collection} holds vectors of {stamp.model_id} (checksum {stamp.checksum[:12]}), a model version "
                "this gateway's repository no longer serves; swap the alias back or reindex with a served model"
            )
        return encoder

    async def _current_encoder(self, deadline: float | None) -> Encoder:
        """The encoder of the active collection's model, or the newest version before the first index."""
        collection = self.index.recent_active(self.alias_refresh_s) or await self._maybe_active(deadline)
        return self.models.newest if collection is None else self._encoder_for(collection)

    async def _read(self, operation: str, fn: Callable[..., T], *args: Any, deadline: float | None, collection: str | None = None) -> tuple[str, T]:
        """Run ``fn(collection, *args)`` on ``collection`` or the resolved one; re-resolve once if it is gone."""
        collection = collection or await self._resolve(deadline)
        try:
            return collection, await self._milvus(operation, fn, collection, *args, deadline=deadline)
        except CollectionMissing:
            collection = await self._active(deadline)
            return collection, await self._milvus(operation, fn, collection, *args, deadline=deadline)

    async def _search(
        self, encode: Callable[[Encoder], Awaitable[np.ndarray]], top_k: int, expression: str, min_score: float | None, deadline: float | None
    ) -> tuple[str, Encoder, list[Hit]]:
        """Encode with the model of the collection that answers, and search it (``_search_in``)."""
        return await self._search_in(lambda _collection, encoder: encode(encoder), top_k, expression, min_score, deadline)

    async def _search_in(
        self, encode: Callable[[str, Encoder], Awaitable[np.ndarray]], top_k: int, expression: str, min_score: float | None, deadline: float | None
    ) -> tuple[str, Encoder, list[Hit]]:
        """Encode with the model of the collection that answers (``encode(collection, encoder)``), and search it.

        The collection is resolved (and model-checked) before any encoding. If it was dropped
        meanwhile (before the search, or before a read of ``encode``'s), the alias is resolved
        afresh and, should the new collection hold another model's vectors, the query is encoded
        again with that model.
        """
        collection = await self._resolve(deadline)
        for attempt in (1, 2):
            encoder = self._encoder_for(collection)
            try:
                vector = await encode(collection, encoder)
                return collection, encoder, await self._milvus("search", self.index.search, collection, vector, top_k, expression, min_score, deadline=deadline)
            except CollectionMissing:
                if attempt == 2:
                    raise
                collection = await self._active(deadline)
        raise AssertionError("unreachable")

    async def _pixels_with_metadata(self, data: bytes, encoder: Encoder) -> tuple[np.ndarray, ImageMetadata]:
        """``_pixels`` and the image's metadata (``inference.images.decode_with_metadata``), from one decode."""
        with span("decode", bytes=len(data)):
            return await asyncio.get_running_loop().run_in_executor(self._decode_pool, load_pixels_with_metadata, data, encoder.preprocess_config, self.limits)

    async def _pixels(self, data: bytes, encoder: Encoder) -> np.ndarray:
        with span("decode", bytes=len(data)):
            return await asyncio.get_running_loop().run_in_executor(self._decode_pool, load_pixels, data, encoder.preprocess_config, self.limits)

    async def _embed_text(self, encoder: Encoder, text: str, deadline: float | None) -> CachedText:
        """``text``'s vector from ``encoder``'s model, through the cache (keyed by the model's checksum)."""
        text = encoder.tokenizer.bound(text)[0]  # before the cache key: a megabyte query costs what a few kilobytes do
        embedded = self.cache.get(encoder.manifest.checksum, text)
        if embedded is None:
            with downstream("triton", "encode_text"):
                vectors, tokens = await encoder.encode_texts([text], deadline)
            embedded = CachedText(vectors[0], tokens.lengths[0], tokens.truncated[0])
            self.cache.put(encoder.manifest.checksum, text, embedded)
        return embedded

    async def search_text(
        self,
        query: str,
        top_k: int,
        search_filter: SearchFilter,
        min_score: float | None,
        deadline: float | None,
        cutoff: Cutoff = Cutoff.NONE,
        page_token: str = "",
    ) -> SearchResult:
        """Images ranked by similarity to ``query``, then cut by ``cutoff`` (``search.cutoff``; no second Milvus call); one page of them (``search.pages``)."""
        start = time.perf_counter()
        text = require_query(query, self.max_query_bytes)
        require_top_k(top_k, self.max_top_k)
        require_min_score(min_score)
        expression = build_expression(search_filter)
        window = open_window(page_token, identity("text", query=text, filter=search_filter, min_score=min_score, cutoff=cutoff), top_k, self.max_page_depth)
        embedded: CachedText | None = None
        threshold: float | None = None

        async def encode(encoder: Encoder) -> np.ndarray:
            nonlocal embedded, threshold
            threshold = threshold_for(cutoff, encoder.manifest, "text")  # an uncalibrated model fails before any encoding
            embedded = await self._embed_text(encoder, text, deadline)
            return embedded.vector

        collection, encoder, hits = await self._search(encode, window.fetch, expression, min_score, deadline)
        assert embedded is not None
        page = window.finish(collection, hits, lambda found: apply_cutoff(found, cutoff, threshold))
        model_id = encoder.manifest.model_id
        return SearchResult.of(page.cut, collection, start, model_id, embedded.tokens, embedded.truncated, page.next_page_token)

    async def search_image(
        self,
        image: bytes | None,
        image_id: str | None,
        top_k: int,
        search_filter: SearchFilter,
        min_score: float | None,
        exclude_self: bool,
        deadline: float | None,
        cutoff: Cutoff = Cutoff.NONE,
        page_token: str = "",
    ) -> SearchResult:
        """Images ranked by similarity to uploaded bytes or to an indexed image, then cut by ``cutoff``; one page of them (``search.pages``)."""
        start = time.perf_counter()
        require_top_k(top_k, self.max_top_k)
        require_min_score(min_score)
        source = {"id": image_id, "exclude_self": exclude_self} if image_id is not None else {"image": image}
        digest = identity("image", **source, filter=search_filter, min_score=min_score, cutoff=cutoff)
        window = open_window(page_token, digest, top_k, self.max_page_depth)
        if image_id is not None:
            require_id(image_id)
            collection = await self._resolve(deadline)
            by_id = threshold_for(cutoff, self._encoder_for(collection).manifest, "image") if cutoff is Cutoff.CALIBRATED else None
            collection, vector = await self._read("get", self.index.vector_of, image_id, deadline=deadline, collection=collection)
            expression = build_expression(search_filter, exclude_id=image_id if exclude_self else None)
            # The stored vector and the collection's rows come from the same model.
            search = self.index.search
            collection, hits = await self._read("search", search, vector, window.fetch, expression, min_score, deadline=deadline, collection=collection)
            page = window.finish(collection, hits, lambda found: apply_cutoff(found, cutoff, by_id))
            return SearchResult.of(page.cut, collection, start, self.index.checked_stamp(collection).model_id, next_page_token=page.next_page_token)
        if image is None:
            raise InvalidArgument("set either image (bytes) or id (an indexed image)")
        expression = build_expression(search_filter)
        threshold: float | None = None

        async def encode(encoder: Encoder) -> np.ndarray:
            nonlocal threshold
            threshold = threshold_for(cutoff, encoder.manifest, "image")
            pixels = await self._pixels(image, encoder)
            with downstream("triton", "encode_image"):
                return (await encoder.encode_pixels(pixels[None], deadline))[0]

        collection, encoder, hits = await self._search(encode, window.fetch, expression, min_score, deadline)
        page = window.finish(collection, hits, lambda found: apply_cutoff(found, cutoff, threshold))
        return SearchResult.of(page.cut, collection, start, encoder.manifest.model_id, next_page_token=page.next_page_token)

    async def _embed_texts(self, encoder: Encoder, texts: Sequence[str], deadline: float | None, prepared: Prepared | None = None) -> list[CachedText]:
        """The vectors of ``texts`` from ``encoder``'s model: from ``prepared`` or the cache, the others in ONE Triton batch."""
        checksum = encoder.manifest.checksum
        bounded = [encoder.tokenizer.bound(text)[0] for text in texts]
        found: dict[str, CachedText] = {}
        for text in bounded:
            entry = (prepared or {}).get((checksum, text)) or self.cache.get(checksum, text)
            if entry is not None:
                found[text] = entry
        if missing := list(dict.fromkeys(text for text in bounded if text not in found)):
            with downstream("triton", "encode_text"):
                vectors, tokens = await encoder.encode_texts(missing, deadline)
            for position, text in enumerate(missing):
                found[text] = CachedText(vectors[position], tokens.lengths[position], tokens.truncated[position])
                self.cache.put(checksum, text, found[text])
        return [found[text] for text in bounded]

    async def _embed_terms(
        self, terms: Sequence[Term], collection: str, encoder: Encoder, deadline: float | None, prepared: Prepared | None
    ) -> tuple[list[np.ndarray], list[CachedText]]:
        """Each checked term's vector (ids: stored; images: decoded on the decode pool, one Triton batch; texts: one batch) and the texts' entries."""
        check_dimensions(terms, encoder.manifest.dimension)
        kinds = {kind: [i for i, term in enumerate(terms) if term.kind is kind] for kind in Kind}
        vectors: dict[int, np.ndarray] = {i: np.asarray(terms[i].value, dtype=np.float32) for i in kinds[Kind.VECTOR]}
        stored = await first_error(
            [self._milvus("get", self.index.vector_of, collection, terms[i].text, deadline) for i in kinds[Kind.ID]], [name(i, "id") for i in kinds[Kind.ID]]
        )
        vectors.update(zip(kinds[Kind.ID], stored, strict=True))
        pixels = await first_error([self._pixels(terms[i].image, encoder) for i in kinds[Kind.IMAGE]], [name(i, "image") for i in kinds[Kind.IMAGE]])
        texts = await self._embed_texts(encoder, [terms[i].text for i in kinds[Kind.TEXT]], deadline, prepared) if kinds[Kind.TEXT] else []
        vectors.update((i, entry.vector) for i, entry in zip(kinds[Kind.TEXT], texts, strict=True))
        if pixels:
            with downstream("triton", "encode_image"):
                vectors.update(zip(kinds[Kind.IMAGE], await encoder.encode_pixels(np.stack(pixels), deadline), strict=True))
        return [vectors[i] for i in range(len(terms))], texts

    async def search(self, query: TermsQuery, deadline: float | None, prepared: Prepared | None = None) -> SearchResult:
        """Images ranked by cosine similarity to the normalized weighted sum of the terms' embeddings (``search.terms``), then cut."""
        start = time.perf_counter()
        terms = check_terms(query.terms, self.max_query_bytes)
        require_top_k(query.top_k, self.max_top_k)
        require_min_score(query.min_score)
        require_calibratable(terms, query.cutoff)
        expression = excluding(build_expression(query.search_filter), [t.text for t in terms if t.kind is Kind.ID] if query.exclude_ids else [])
        digest = identity("search", terms=terms, filter=query.search_filter, min_score=query.min_score, cutoff=query.cutoff, exclude_ids=query.exclude_ids)
        window = open_window(query.page_token, digest, query.top_k, self.max_page_depth)
        threshold: float | None = None
        texts: list[CachedText] = []

        async def encode(collection: str, encoder: Encoder) -> np.ndarray:
            nonlocal threshold, texts
            threshold = threshold_for(query.cutoff, encoder.manifest, "text")  # an uncalibrated model fails before any encoding
            embeddings, texts = await self._embed_terms(terms, collection, encoder, deadline, prepared)
            return combine(embeddings, [term.weight or 1.0 for term in terms])

        collection, encoder, hits = await self._search_in(encode, window.fetch, expression, query.min_score, deadline)
        page = window.finish(collection, hits, lambda found: apply_cutoff(found, query.cutoff, threshold))
        tokens, truncated = token_report([t.tokens for t in texts], [t.truncated for t in texts])
        return SearchResult.of(page.cut, collection, start, encoder.manifest.model_id, tokens, truncated, page.next_page_token)

    async def search_batch(self, queries: Sequence[TermsQuery | T2IError], deadline: float | None) -> list[SearchResult | BaseException]:
        """Each search's result or its error, in order; an entry that is already an error (it did not convert) stays one.

        The text terms of all searches are encoded first, in as few Triton batches as possible
        (``TEXT_CHUNK`` texts each), with the model of the collection resolved now; a search
        answered by another collection (an alias swap meanwhile) encodes its own.

        Raises:
            InvalidArgument: no searches, or more than ``max_batch``.
            ResourceExhausted: more than ``BATCH_TERMS_PER_SEARCH`` × ``max_batch`` terms in all (one call, one admission slot).
        """
        require_batch(queries, self.max_batch, "requests")
        terms = sum(len(query.terms) for query in queries if isinstance(query, TermsQuery))
        if terms > BATCH_TERMS_PER_SEARCH * self.max_batch:
            raise ResourceExhausted(
                f"requests: {terms} terms in all; a SearchBatch takes at most {BATCH_TERMS_PER_SEARCH * self.max_batch} "
                f"({BATCH_TERMS_PER_SEARCH} per search of T2I_MAX_BATCH {self.max_batch}): split it into several calls"
            )
        prepared = await self._prepare_texts([q for q in queries if isinstance(q, TermsQuery)], deadline)

        async def one(query: TermsQuery | T2IError) -> SearchResult:
            if isinstance(query, T2IError):
                raise query
            return await self.search(query, deadline, prepared)

        return list(await asyncio.gather(*(one(query) for query in queries), return_exceptions=True))

    async def _prepare_texts(self, queries: Sequence[TermsQuery], deadline: float | None) -> Prepared:
        """The text terms of the well-formed ``queries``, encoded in batches; empty when that fails (each search then tries alone)."""
        texts: list[str] = []
        for query in queries:
            try:
                texts += [term.text for term in check_terms(query.terms, self.max_query_bytes) if term.kind is Kind.TEXT]
            except T2IError:
                continue  # that search reports its own error
        if not texts:
            return {}
        try:
            encoder = self._encoder_for(await self._resolve(deadline))
            unique = list(dict.fromkeys(encoder.tokenizer.bound(text)[0] for text in texts))
            chunks = [await self._embed_texts(encoder, unique[i : i + TEXT_CHUNK], deadline) for i in range(0, len(unique), TEXT_CHUNK)]
        except T2IError:
            return {}
        checksum = encoder.manifest.checksum
        return {(checksum, text): entry for text, entry in zip(unique, (e for chunk in chunks for e in chunk), strict=True)}

    async def embed_texts(self, texts: Sequence[str], deadline: float | None) -> Embeddings:
        """Normalized text vectors (of the active collection's model) and whether each text was truncated."""
        require_batch(texts, self.max_batch, "texts")
        cleaned = []
        for position, text in enumerate(texts):
            try:
                cleaned.append(require_query(text, self.max_query_bytes * self.max_batch))  # EmbedText's cap is the request's
            except InvalidArgument as exc:
                raise InvalidArgument(f"texts[{position}]: {exc}") from exc
        encoder = await self._current_encoder(deadline)
        with downstream("triton", "encode_text"):
            vectors, tokens = await encoder.encode_texts(cleaned, deadline)
        return Embeddings(vectors, encoder.manifest.model_id, tokens.truncated)

    async def embed_images(self, images: Sequence[bytes], deadline: float | None) -> Embeddings:
        """Normalized image vectors (of the active collection's model); a bad image fails the request, naming its position."""
        require_batch(images, self.max_batch, "images")
        encoder = await self._current_encoder(deadline)
        pixels = []
        for position, data in enumerate(images):
            try:
                pixels.append(await self._pixels(data, encoder))
            except InvalidArgument as exc:
                raise InvalidArgument(f"images[{position}]: {exc}") from exc
        with downstream("triton", "encode_image"):
            vectors = await encoder.encode_pixels(np.stack(pixels), deadline)
        return Embeddings(vectors, encoder.manifest.model_id, [False] * len(vectors))

    async def upsert(self, items: Sequence[UpsertItem], deadline: float | None) -> list[ItemOutcome]:
        """Index items; each fails or succeeds on its own."""
        require_batch(items, self.max_batch, "items")
        collection = await self._milvus("ensure_active", self.index.ensure_active, deadline)  # writers create the first collection
        encoder = self._encoder_for(collection)
        outcomes: dict[int, ItemOutcome] = {}
        seen: set[str] = set()
        for position, item in enumerate(items):
            problem = check_item(item.id, item.uri, item.labels)
            if problem is None and item.id in seen:
                problem = "duplicate id in this request"
            if problem is None and item.modified_time is not None and not MIN_TIME_US <= item.modified_time <= MAX_TIME_US:
                problem = "modified_time is not a valid timestamp (years 1 to 9999)"
            seen.add(item.id)
            if problem:
                outcomes[position] = ItemOutcome(item.id, False, problem)
        # A collection that stores the modification time rewrites a row whose time changed (core.records.item_hash).
        timed = await self._milvus("schema", self.index.schema_version, collection, deadline) >= METADATA_SCHEMA
        hashes = {i: item_hash(item.content, item.uri, item.labels, item.modified_time if timed else None) for i, item in enumerate(items) if i not in outcomes}
        stored = await self._milvus("hashes", self.index.hashes, collection, [items[i].id for i in hashes], deadline)
        pending: list[tuple[int, np.ndarray]] = []
        metadata: dict[int, ImageMetadata] = {}
        for i, content_hash in hashes.items():
            if stored.get(items[i].id) == content_hash:
                outcomes[i] = ItemOutcome(items[i].id, True, unchanged=True)
                continue
            try:
                pixels, read = await self._pixels_with_metadata(items[i].content, encoder)
            except InvalidArgument as exc:
                outcomes[i] = ItemOutcome(items[i].id, False, str(exc))
                continue
            pending.append((i, pixels))
            metadata[i] = dataclasses.replace(read, modified_time=items[i].modified_time)
        if pending:
            with downstream("triton", "encode_image"):
                vectors = await encoder.encode_pixels(np.stack([p for _, p in pending]), deadline)
            rows = [
                make_row(items[i].id, vector, items[i].uri, items[i].labels, hashes[i], metadata=metadata[i])
                for (i, _), vector in zip(pending, vectors, strict=True)
            ]
            await self._milvus("upsert", self.index.upsert, collection, rows, deadline)
            outcomes.update({i: ItemOutcome(items[i].id, True) for i, _ in pending})
        return [outcomes[i] for i in range(len(items))]

    async def delete(self, ids: Sequence[str], deadline: float | None = None) -> int:
        """Delete ids; returns how many existed (0 when nothing was indexed yet)."""
        require_ids(ids, self.max_batch)
        collection = await self._maybe_active(deadline)
        if collection is None:
            return 0
        return await self._milvus("delete", self.index.delete, collection, list(ids), deadline)

    async def images(self, ids: Sequence[str], deadline: float | None = None) -> list[Record]:
        """The stored uri and labels of the indexed ids among ``ids`` (none before the first index)."""
        require_ids(ids, self.max_batch)
        collection = await self._maybe_active(deadline)
        if collection is None:
            return []
        return await self._milvus("get", self.index.records, collection, list(ids), deadline)

    async def labels(self, max_rows: int, deadline: float | None = None) -> tuple[list[str], bool]:
        """Distinct labels of the active collection (of its first ``max_rows`` rows) and whether that was all of it."""
        if not 0 <= max_rows <= MAX_LABEL_ROWS:
            raise InvalidArgument(f"max_rows must be between 0 and {MAX_LABEL_ROWS}; got {max_rows}")
        collection = await self._maybe_active(deadline)
        if collection is None:
            return [], True
        return await self._milvus("labels", self.index.labels, collection, max_rows or DEFAULT_LABEL_ROWS, deadline)

    def find_duplicates(self, query: DuplicatesQuery, deadline: float | None, batch: int = SCAN_BATCH) -> AsyncIterator[Chunk]:
        """The pairs of indexed images at least ``query.min_score`` alike, in chunks of ``batch`` images (``search.duplicates``; the alias resolved afresh)."""
        return find_duplicates(query, self.index, self._milvus, self._active, deadline, batch)

    async def info(self, deadline: float | None = None) -> IndexInfo:
        """Facts about the active collection (count 0 and no collection name before the first index)."""
        return await self._milvus("info", self.index.info, deadline)

    def random_weights(self, stamp: ModelStamp) -> bool:
        """True when the model stamped ``stamp`` (else the newest version) has random weights."""
        return (self.models.for_stamp(stamp) or self.models.newest).manifest.random_weights

    async def ready(self) -> bool:
        """True when Triton has both models and Milvus answers; the active collection, if any, is loaded and ours.

        Nothing indexed yet is ready: upserts and embeddings work, and searches say what to do.
        """
        try:
            collection = await self._maybe_active(None)
            if not await (self.models.newest if collection is None else self._encoder_for(collection)).ready():
                return False
            return collection is None or await self._milvus("load_state", self.index.loaded, collection)
        except T2IError as exc:
            logger.warning("not ready: %s", exc)
            return False


async def first_error(calls: Sequence[Awaitable[T]], names: Sequence[str]) -> list[T]:
    """The results of ``calls``, run together; the error of the first (in order) that failed, prefixed by its name."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result, where in zip(results, names, strict=True):
        if isinstance(result, T2IError):
            raise reworded(result, where) from result
        if isinstance(result, BaseException):
            raise result
    return list(results)  # type: ignore[arg-type]


def engine_from_settings(settings: GatewaySettings) -> SearchEngine:
    """The engine ``settings`` describe: the Triton encoder, the Milvus index and the limits."""
    models = catalog_from_settings(settings)
    index = index_from_settings(settings, ModelStamp.of(models.newest.manifest), serves=models.serves)
    limits = ImageLimits.from_settings(settings)
    return SearchEngine(
        models,
        index,
        settings.max_top_k,
        settings.max_batch,
        limits,
        EmbeddingCache(settings.embedding_cache_size),
        settings.alias_refresh_s,
        settings.milvus_threads,
        settings.decode_threads,
        settings.max_text_request_kb * 1024,
        settings.max_page_depth,
    )
