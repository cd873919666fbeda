"""What the gateway's interceptors share: wrapping the unary (or server-streaming) handler of the layers below them, typed.

The interceptors have one job each, and ``gateway.server.interceptors`` composes them in this
order, outermost first: telemetry (``gateway.telemetry``), auth (``gateway.auth``), admission
(``gateway.admission``), error mapping (``gateway.errors``); its docstring says why.

An interceptor that wraps a handler keeps its serializers. grpc parses a request with the request
deserializer of the handler that the outermost interceptor returns, so admission's guarded
deserializer, wrapped around the one below it, is the one that runs; the layers outside it keep it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc

# (Strings: grpc's classes cannot be subscripted at run time, only in grpc-stubs.)
# What a grpc.aio handler runs for one unary call: the request (or a ``Refused``) and the context in, the response out.
Behavior: TypeAlias = "Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]"
# What a grpc.aio handler runs for one server-streaming call (FindDuplicates): the request and the context in, the responses out.
StreamBehavior: TypeAlias = "Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]"
# What an interceptor calls to get the handler of the layers below it (None: no such method).
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]]"


def unary_behavior(handler: grpc.RpcMethodHandler[Any, Any] | None) -> Behavior | None:
    """The coroutine function of a unary-unary ``handler``; None for a streaming one, or for no handler.

    Handlers registered on a grpc.aio server are coroutine functions; grpc-stubs types
    ``RpcMethodHandler.unary_unary`` as the synchronous kind, hence the cast.
    """
    if handler is None or handler.unary_unary is None:
        return None
    return cast(Behavior, handler.unary_unary)


def rewrapped(
    handler: grpc.RpcMethodHandler[Any, Any], behavior: Behavior, request_deserializer: Callable[[bytes], Any] | None = None
) -> grpc.RpcMethodHandler[Any, Any]:
    """A unary handler that runs ``behavior`` with ``handler``'s serializers (its request deserializer unless one is given)."""
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def stream_behavior(handler: grpc.RpcMethodHandler[Any, Any] | None) -> StreamBehavior | None:
    """The async generator function of a unary-stream ``handler``; None for any other kind, or for no handler."""
    if handler is None or handler.unary_stream is None:
        return None
    return cast(StreamBehavior, handler.unary_stream)


def rewrapped_stream(
    handler: grpc.RpcMethodHandler[Any, Any], behavior: StreamBehavior, request_deserializer: Callable[[bytes], Any] | None = None
) -> grpc.RpcMethodHandler[Any, Any]:
    """A unary-stream handler that runs ``behavior`` with ``handler``'s serializers (its request deserializer unless one is given)."""
    return grpc.unary_stream_rpc_method_handler(
        behavior,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def method_name(handler_call_details: grpc.HandlerCallDetails) -> str:
    """The method's short name (``SearchText`` of ``/text2image.v1.SearchService/SearchText``), as metrics and logs name it."""
    return handler_call_details.method.rpartition("/")[2]


def aborted_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """The status a layer below set when it aborted the call (UNKNOWN if none is set)."""
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


async def observed(
    inner: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], done: Callable[[grpc.StatusCode, float, Exception | None], None]
) -> Any:
    """Await ``inner``, then call ``done`` with the status the client gets, the seconds it took, and the
    exception no layer below mapped (grpc answers it UNKNOWN), if any. What telemetry and admission observe."""
    start = time.perf_counter()
    code, unmapped = grpc.StatusCode.OK, None
    try:
        return await inner(request, context)
    except grpc.aio.AbortError:
        code = aborted_code(context)
        raise
    except Exception as exc:  # no layer below mapped it: grpc answers UNKNOWN
        code, unmapped = grpc.StatusCode.UNKNOWN, exc
        raise
    finally:
        done(code, time.perf_counter() - start, unmapped)


async def observed_stream(
    inner: StreamBehavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], done: Callable[[grpc.StatusCode, float, Exception | None], None]
) -> AsyncIterator[Any]:
    """``observed`` for a server-streaming call: ``done`` runs when the stream ends, CANCELLED when the client went away."""
    start = time.perf_counter()
    code, unmapped = grpc.StatusCode.OK, None
    try:
        async for response in inner(request, context):
            yield response
    except grpc.aio.AbortError:
        code = aborted_code(context)
        raise
    except (asyncio.CancelledError, GeneratorExit):
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:  # no layer below mapped it: grpc answers UNKNOWN
        code, unmapped = grpc.StatusCode.UNKNOWN, exc
        raise
    finally:
        done(code, time.perf_counter() - start, unmapped)
