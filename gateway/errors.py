"""The error-mapping interceptor: the one place where the servicers' domain errors become gRPC status codes.

A ``T2IError`` gets its status and message; anything else gets INTERNAL with an incident id for
the client and the traceback, under that id, in the log. It is the innermost interceptor, next to
the servicers; the layers outside it (auth, admission) answer their own refusals through
``status_for`` or ``context.abort``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc

from core.errors import T2IError
from gateway.interceptors import Continuation, StreamBehavior, method_name, rewrapped, rewrapped_stream, stream_behavior, unary_behavior

logger = logging.getLogger(__name__)


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for ``error``."""
    if isinstance(error, T2IError):
        return grpc.StatusCode[error.grpc_code_name], str(error)
    return grpc.StatusCode.INTERNAL, "internal error"


def answer_for(error: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """What a client of ``method`` gets for ``error``, logged: a ``T2IError``'s status and message, or INTERNAL with an incident id
    (the traceback is logged under it). The interceptor answers a call with it, and ``SearchBatch`` each failed search."""
    if isinstance(error, T2IError):
        code, message = status_for(error)
        logger.info("%s -> %s: %s", method, code.name, message)
        return code, message
    incident = uuid.uuid4().hex[:12]
    logger.error("%s failed (incident %s)", method, incident, exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error (incident {incident}); see the gateway log"


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Maps ``T2IError`` subclasses to their status; anything else to INTERNAL with a logged traceback."""

    async def intercept_service(self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = method_name(handler_call_details)
        stream = stream_behavior(handler)
        if handler is not None and stream is not None:
            return rewrapped_stream(handler, mapped_stream(stream, method))
        inner = unary_behavior(handler)
        if handler is None or inner is None:
            return handler

        async def mapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await inner(request, context)
            except grpc.aio.AbortError:  # the handler chose its status itself
                raise
            except Exception as exc:  # noqa: BLE001 (answer_for logs it with its traceback)
                await context.abort(*answer_for(exc, method))

        return rewrapped(handler, mapped)


def mapped_stream(inner: StreamBehavior, method: str) -> StreamBehavior:
    """``inner`` with its domain errors mapped as the unary calls' are: an error after some responses ends the stream with that status."""

    async def mapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            async for response in inner(request, context):
                yield response
        except grpc.aio.AbortError:  # the handler chose its status itself
            raise
        except Exception as exc:  # noqa: BLE001 (answer_for logs it with its traceback)
            await context.abort(*answer_for(exc, method))

    return mapped
