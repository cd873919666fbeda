"""The error-mapping interceptor: the one place where the servicers' domain errors become gRPC status codes.

A ``T2IError`` gets its status and message; anything else gets INTERNAL with an incident id for
the client and the traceback, under that id, in the log. It is the innermost interceptor, next to
the servicers; the layers outside it (auth, admission) answer their own refusals through
``status_for`` or ``context.abort``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import grpc

from core.errors import T2IError
from gateway.interceptors import Continuation, method_name, rewrapped, unary_behavior

logger = logging.getLogger(__name__)


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for ``error``."""
    if isinstance(error, T2IError):
        return grpc.StatusCode[error.grpc_code_name], str(error)
    return grpc.StatusCode.INTERNAL, "internal error"


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Maps ``T2IError`` subclasses to their status; anything else to INTERNAL with a logged traceback."""

    async def intercept_service(self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        inner = unary_behavior(handler)
        if handler is None or inner is None:
            return handler
        method = method_name(handler_call_details)

        async def mapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await inner(request, context)
            except T2IError as exc:
                code, message = status_for(exc)
                logger.info("%s -> %s: %s", method, code.name, message)
                await context.abort(code, message)
            except grpc.aio.AbortError:  # the handler chose its status itself
                raise
            except Exception:
                incident = uuid.uuid4().hex[:12]
                logger.exception("%s failed (incident %s)", method, incident)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident}); see the gateway log")

        return rewrapped(handler, mapped)
