"""Bearer-token authentication and read/write scopes, in one server interceptor.

``authorization: Bearer <token>`` metadata is checked against a ``TokenStore`` before the request
is parsed. Health and reflection stay open (probes, ``grpcurl list``). A missing or unknown token
gets UNAUTHENTICATED, a token without the method's scope PERMISSION_DENIED; both are counted, and
every write is logged with its token's name (never the token).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter

from core.auth import TokenStore

logger = logging.getLogger(__name__)

REFUSALS = Counter("t2i_auth_refusals_total", "Requests refused by authentication or authorization", ["method", "reason"])

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")
READ_METHODS = (
    "/text2image.v1.SearchService/",
    "/text2image.v1.EmbeddingService/",
    "/text2image.v1.IndexService/GetIndexInfo",
    "/text2image.v1.IndexService/GetImages",
    "/text2image.v1.IndexService/ListLabels",
)


def required_scope(method: str) -> str | None:
    """The scope ``method`` (``/package.Service/Method``) needs: None for open ones, ``write`` unless listed as a read."""
    if method.startswith(OPEN_SERVICES):
        return None
    if any(method == prefix or (prefix.endswith("/") and method.startswith(prefix)) for prefix in READ_METHODS):
        return "read"
    return "write"


def bearer(metadata: Any) -> str | None:
    """The token of an ``authorization: Bearer ...`` entry, or None."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def _refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler[Any, Any]:
    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    # The body is never parsed: a refused request costs no deserialization.
    return grpc.unary_unary_rpc_method_handler(refuse, request_deserializer=lambda _data: None)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks each call's bearer token and scope against ``store``."""

    def __init__(self, store: TokenStore):
        self.store = store

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        scope = required_scope(method)
        if scope is None:
            return await continuation(handler_call_details)
        short = method.rsplit("/", 1)[-1]
        token = bearer(handler_call_details.invocation_metadata)
        if token is None:
            REFUSALS.labels(short, "missing").inc()
            return _refusal(grpc.StatusCode.UNAUTHENTICATED, "this call needs a token: send 'authorization: Bearer <token>' metadata (t2i: T2I_TOKEN)")
        entry = self.store.find(token)
        if entry is None:
            REFUSALS.labels(short, "unknown").inc()
            return _refusal(grpc.StatusCode.UNAUTHENTICATED, "the token is not recognized (revoked, mistyped, or for another gateway)")
        if scope not in entry.scopes:
            REFUSALS.labels(short, "scope").inc()
            return _refusal(grpc.StatusCode.PERMISSION_DENIED, f"the token '{entry.name}' has no '{scope}' scope, which {short} needs")
        if scope == "write":
            logger.info("write %s by token '%s'", short, entry.name)
        return await continuation(handler_call_details)
