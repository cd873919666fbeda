"""The gateway client of ``t2i``, the demos, the benchmarks and the tests: a thin layer over text2image_client.

The client library (``client/``, the ``text2image-client`` distribution) holds the channel, the round
robin and retries, TLS and the typed calls. What it must not know stays here: the bearer token
defaults to ``client_token(scope)`` (``T2I_TOKEN``, ``T2I_TOKEN_FILE``, or the token that ``t2i up``
generated, found through ``Settings``), and TLS comes from ``TlsFiles``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from core.auth import client_token
from core.settings import Settings, TlsFiles
from text2image.v1 import text2image_pb2 as pb
from text2image_client import Client, Tls
from text2image_client import _channel as library
from text2image_client._channel import BearerToken

MAX_MESSAGE = library.MAX_MESSAGE
SERVICES = library.SERVICES
SERVICE_CONFIG = library.SERVICE_CONFIG
CHANNEL_OPTIONS = library.CHANNEL_OPTIONS

__all__ = ["CHANNEL_OPTIONS", "MAX_MESSAGE", "SERVICES", "SERVICE_CONFIG", "BearerToken", "GatewayClient", "channel_credentials", "format_hits", "open_channel"]


def tls_of(tls: TlsFiles | None) -> Tls | None:
    """The client library's ``Tls`` from the PEM files of ``TlsFiles`` (``None``: plaintext)."""
    return Tls.from_files(ca=tls.ca, cert=tls.cert, key=tls.key) if tls else None


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """TLS credentials from PEM files (no CA: the system's roots; a certificate and key: mutual TLS)."""
    return Tls.from_files(ca=tls.ca, cert=tls.cert, key=tls.key).credentials()


def open_channel(address: str, token: str | None = None, tls: TlsFiles | None = None, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """A blocking channel to the gateway with ``token`` on every call, over TLS when ``tls`` is given."""
    return library.open_channel(address, token, tls_of(tls), options)


class GatewayClient:
    """Blocking client for the three services: the generated stubs, and ``api``, the typed ``text2image_client.Client``.

    ``address`` is one ``host:port``, or a target that resolves to several gateways:
    ``ipv4:10.0.0.1:50051,10.0.0.2:50051`` or ``dns:///gateway-headless.ns.svc:50051`` (a headless
    Service). Requests go round robin over all of them, and UNAVAILABLE is retried (``SERVICE_CONFIG``).
    ``token`` defaults to ``client_token(scope)``: ``T2I_TOKEN``, ``T2I_TOKEN_FILE``, or the local
    stack's token of ``scope`` (``read`` or ``write``); an empty one sends none.
    ``search``, ``embedding`` and ``index`` are the stubs (raw messages); ``api`` has the typed calls.
    """

    def __init__(self, address: str, timeout_s: float = 30.0, token: str | None = None, tls: TlsFiles | None = None, scope: str = "read"):
        token = token if token is not None else client_token(scope, Settings().data_dir)
        self.api = Client(address, token=token or None, tls=tls_of(tls), timeout=timeout_s)
        self.channel = self.api.channel
        self.search = self.api.search_stub
        self.embedding = self.api.embedding_stub
        self.index = self.api.index_stub
        self.timeout_s = timeout_s

    def search_text(self, query: str, top_k: int = 5, **fields: Any) -> pb.SearchResponse:
        """``SearchText`` (the response message)."""
        return self.search.SearchText(pb.SearchTextRequest(query=query, top_k=top_k, **fields), timeout=self.timeout_s)

    def search_image(self, top_k: int = 5, **fields: Any) -> pb.SearchResponse:
        """``SearchImage`` with ``image=bytes`` or ``id=str`` (the response message)."""
        return self.search.SearchImage(pb.SearchImageRequest(top_k=top_k, **fields), timeout=self.timeout_s)

    def info(self) -> pb.GetIndexInfoResponse:
        """``GetIndexInfo`` (the response message)."""
        return self.api.info().raw

    def find_duplicates(self, timeout_s: float | None = None, **fields: Any) -> Iterator[pb.FindDuplicatesResponse]:
        """One ``FindDuplicates`` stream (the response messages), with a deadline of ``timeout_s`` (default the client's) for the whole stream."""
        return iter(self.search.FindDuplicates(pb.FindDuplicatesRequest(**fields), timeout=timeout_s or self.timeout_s))

    def close(self) -> None:
        """Close the channel."""
        self.api.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_hits(title: str, response: pb.SearchResponse) -> str:
    """A ranked table of hits: rank, score, id, uri."""
    lines = [
        f"{title}  ({len(response.hits)} hits, {response.took_ms:.0f} ms, model {response.model_id}"
        + (", query truncated" if response.query_truncated else "")
        + (f", cut-off dropped {response.cutoff_dropped}" if response.cutoff_dropped else "")
        + ")"
    ]
    for rank, hit in enumerate(response.hits, 1):
        lines.append(f"  {rank:>2}. {hit.score:+.4f}  {hit.id:<28} {hit.uri}")
    if not response.hits:
        lines.append("  (no hits)")
    return "\n".join(lines)
