"""A small gRPC client for the gateway, used by ``t2i search`` and the demo."""

from __future__ import annotations

import json
from typing import Any

import grpc

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


class GatewayClient:
    """Blocking client for the three services.

    ``address`` is one ``host:port``, or a target that resolves to several gateways:
    ``ipv4:10.0.0.1:50051,10.0.0.2:50051`` or ``dns:///gateway-headless.ns.svc:50051`` (a headless
    Service). Requests go round robin over all of them, and UNAVAILABLE is retried (``SERVICE_CONFIG``).
    """

    def __init__(self, address: str, timeout_s: float = 30.0):
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
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
        + ")"
    ]
    for rank, hit in enumerate(response.hits, 1):
        lines.append(f"  {rank:>2}. {hit.score:+.4f}  {hit.id:<28} {hit.uri}")
    if not response.hits:
        lines.append("  (no hits)")
    return "\n".join(lines)
