"""The one place where domain errors become gRPC status codes, and where every RPC is counted.

It also guards parsing: a request larger than its method's cap is refused with RESOURCE_EXHAUSTED
before it is parsed, and bytes that do not parse (invalid UTF-8 in a string field, a truncated
message) get INVALID_ARGUMENT instead of grpc's UNKNOWN.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError

from core.errors import InvalidArgument, ResourceExhausted, T2IError
from gateway.metrics import LATENCY, REQUESTS

logger = logging.getLogger(__name__)


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for ``error``."""
    if isinstance(error, T2IError):
        return grpc.StatusCode[error.grpc_code_name], str(error)
    return grpc.StatusCode.INTERNAL, "internal error"


class Refused:
    """What a guarded deserializer returns instead of a request it refused; the handler raises ``error``."""

    def __init__(self, error: T2IError):
        self.error = error


def _size(count: int) -> str:
    return f"{count} bytes" if count < 10 * 1024 else f"{count / 1024:.0f} KiB"


def guarded(deserializer: Callable[[bytes], Any] | None, method: str, cap: int | None) -> Callable[[bytes], Any]:
    """``deserializer`` behind a size cap (bytes, None: none) that never raises: it returns ``Refused`` instead."""

    def parse(data: bytes) -> Any:
        if cap is not None and len(data) > cap:
            return Refused(ResourceExhausted(f"{method} requests are limited to {_size(cap)}; this one is {_size(len(data))}"))
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except DecodeError:
            return Refused(InvalidArgument(f"the {method} request does not parse: string fields must be valid UTF-8, and the message must be complete"))

    return parse


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Maps ``T2IError`` subclasses to their status; anything else to INTERNAL with a logged traceback.

    ``caps`` limits the serialized size of requests by method name (``SearchText``: a few KiB).
    """

    def __init__(self, caps: dict[str, int] | None = None):
        self.caps = caps or {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        # Handlers registered on a grpc.aio server are coroutine functions; the stubs type the sync kind.
        inner = cast(Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]], handler.unary_unary)

        async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                if isinstance(request, Refused):
                    raise request.error
                return await inner(request, context)
            except T2IError as exc:
                code, message = status_for(exc)
                logger.info("%s -> %s: %s", method, code.name, message)
                await context.abort(code, message)
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                code = grpc.StatusCode.INTERNAL
                incident = uuid.uuid4().hex[:12]
                logger.exception("%s failed (incident %s)", method, incident)
                await context.abort(code, f"internal error (incident {incident}); see the gateway log")
            finally:
                REQUESTS.labels(method, code.name).inc()
                LATENCY.labels(method).observe(time.perf_counter() - start)

        parse = guarded(handler.request_deserializer, method, self.caps.get(method))
        return grpc.unary_unary_rpc_method_handler(wrapper, request_deserializer=parse, response_serializer=handler.response_serializer)
