"""text2image-client: the typed Python client of the text2image-search gateway.

``Client`` (blocking) and ``AsyncClient`` (asyncio) call the gateway's ``text2image.v1`` services
over gRPC: round robin and retries on UNAVAILABLE over several gateways, a bearer token, TLS,
deadlines, typed results, and iterators that follow the pages of a search. The generated stubs
ship in the same distribution as ``text2image.v1``::

    from text2image_client import Client

    with Client("127.0.0.1:50051", token="...") as client:
        for hit in client.search_text("a red circle", top_k=5).hits:
            print(hit.score, hit.id)
"""

from __future__ import annotations

from text2image_client._channel import CHANNEL_OPTIONS, SERVICE_CONFIG, Tls, channel_options, open_aio_channel, open_channel, target
from text2image_client.aio import AsyncClient
from text2image_client.client import Client
from text2image_client.types import (
    Cutoff,
    DuplicatePair,
    DuplicatesChunk,
    Embeddings,
    Filter,
    Hit,
    ImageItem,
    ImageMetadata,
    ImageRecord,
    IndexInfo,
    ItemResult,
    Labels,
    Query,
    SearchFailure,
    SearchResult,
    Term,
    UpsertResult,
)

__version__ = "0.1.0"

__all__ = [
    "CHANNEL_OPTIONS",
    "SERVICE_CONFIG",
    "AsyncClient",
    "Client",
    "Cutoff",
    "DuplicatePair",
    "DuplicatesChunk",
    "Embeddings",
    "Filter",
    "Hit",
    "ImageItem",
    "ImageMetadata",
    "ImageRecord",
    "IndexInfo",
    "ItemResult",
    "Labels",
    "Query",
    "SearchFailure",
    "SearchResult",
    "Term",
    "Tls",
    "UpsertResult",
    "channel_options",
    "open_aio_channel",
    "open_channel",
    "target",
]
