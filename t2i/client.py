"""A small gRPC client for the gateway, used by ``t2i search`` and the demo.

It presents a bearer token (``token=``, default ``T2I_TOKEN``, ``T2I_TOKEN_FILE``, or the token
that ``t2i up`` generated) and talks TLS when given ``TlsFiles`` (``tls=``).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from core.auth import client_token
from core.settings import Settings, TlsFiles
from text2image.v1 import text2image_pb2 as pb
from text2image.v1 import text2image_pb2_grpc as pb_grpc

MAX_MESSAGE = 64 * 2**20
SERVICES = ("text2image.v1.SearchService", "text2image.v1.EmbeddingService", "text2image.v1.IndexService")
# Balance per request over every address the target resolves to, and retry a request that a
# gateway going away answered with UNAVAILABLE on another one. Every RPC is safe to retry: writes
# are upserts and deletes by id.
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": service} for service in SERVICES],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
]


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class BearerToken(grpc.UnaryUnaryClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str):
        self.header = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails, request: Any) -> Any:
        details = client_call_details
        metadata = [*(details.metadata or ()), self.header]
        return continuation(
            _CallDetails(details.method, details.timeout, metadata, details.credentials, details.wait_for_ready, details.compression),
            request,
        )


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """TLS credentials from PEM files (no CA: the system's roots; a certificate and key: mutual TLS)."""

    def read(path: Path | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(root_certificates=read(tls.ca), private_key=read(tls.key), certificate_chain=read(tls.cert))


def open_channel(address: str, token: str | None = None, tls: TlsFiles | None = None, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """A blocking channel to the gateway with ``token`` on every call, over TLS when ``tls`` is given."""
    options = options if options is not None else CHANNEL_OPTIONS
    channel = grpc.secure_channel(address, channel_credentials(tls), options=options) if tls else grpc.insecure_channel(address, options=options)
    return grpc.intercept_channel(channel, BearerToken(token)) if token else channel


class GatewayClient:
    """Blocking client for the three services.

    ``address`` is one ``host:port``, or a target that resolves to several gateways:
    ``ipv4:10.0.0.1:50051,10.0.0.2:50051`` or ``dns:///gateway-headless.ns.svc:50051`` (a headless
    Service). Requests go round robin over all of them, and UNAVAILABLE is retried (``SERVICE_CONFIG``).
    ``token`` defaults to ``client_token(scope)``: ``T2I_TOKEN``, ``T2I_TOKEN_FILE``, or the local
    stack's token of ``scope`` (``read`` or ``write``).
    """

    def __init__(self, address: str, timeout_s: float = 30.0, token: str | None = None, tls: TlsFiles | None = None, scope: str = "read"):
        self.channel = open_channel(address, token if token is not None else client_token(scope, Settings().data_dir), tls)
        self.search = pb_grpc.SearchServiceStub(self.channel)
        self.embedding = pb_grpc.EmbeddingServiceStub(self.channel)
        self.index = pb_grpc.IndexServiceStub(self.channel)
        self.timeout_s = timeout_s

    def search_text(self, query: str, top_k: int = 5, **fields: Any) -> pb.SearchResponse:
        """``SearchText``."""
        return self.search.SearchText(pb.SearchTextRequest(query=query, top_k=top_k, **fields), timeout=self.timeout_s)

    def search_image(self, top_k: int = 5, **fields: Any) -> pb.SearchResponse:
        """``SearchImage`` with ``image=bytes`` or ``id=str``."""
        return self.search.SearchImage(pb.SearchImageRequest(top_k=top_k, **fields), timeout=self.timeout_s)

    def info(self) -> pb.GetIndexInfoResponse:
        """``GetIndexInfo``."""
        return self.index.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=self.timeout_s)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

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
