"""The one place where domain errors become gRPC status codes, and where every RPC is counted."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc

from core.errors import T2IError
from gateway.metrics import LATENCY, REQUESTS

logger = logging.getLogger(__name__)


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for ``error``."""
    if isinstance(error, T2IError):
        return grpc.StatusCode[error.grpc_code_name], str(error)
    return grpc.StatusCode.INTERNAL, "internal error"


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Maps ``T2IError`` subclasses to their status; anything else to INTERNAL with a logged traceback."""

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

        return grpc.unary_unary_rpc_method_handler(wrapper, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
