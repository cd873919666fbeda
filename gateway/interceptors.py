"""The one place where domain errors become gRPC status codes, and where every RPC is counted.

It also guards parsing: a request larger than its method's cap is refused with RESOURCE_EXHAUSTED
before it is parsed, and bytes that do not parse (invalid UTF-8 in a string field, a truncated
message) get INVALID_ARGUMENT instead of grpc's UNKNOWN. With an ``Admission``, the project's
methods are shed under overload (``gateway.admission``), also before parsing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import trace

from core.errors import InvalidArgument, ResourceExhausted, T2IError
from core.tracing import incoming, tracer
from gateway.admission import Admission, Overloaded
from gateway.metrics import LATENCY, REQUESTS

logger = logging.getLogger(__name__)

# Codes that mark a server-side failure on the RPC's span (OpenTelemetry's gRPC conventions); the others are the client's.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


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


def guarded(deserializer: Callable[[bytes], Any] | None, method: str, cap: int | None, admission: Admission | None = None) -> Callable[[bytes], Any]:
    """``deserializer`` behind a size cap (bytes, None: none) and the admission bound, never raising: it returns ``Refused`` instead."""

    def parse(data: bytes) -> Any:
        if admission is not None and admission.full:
            return Refused(admission.busy(method))
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

    ``caps`` limits the serialized size of requests by method name (``SearchText``: a few KiB);
    ``admission`` sheds the methods of ``text2image.*`` services under overload.
    """

    def __init__(self, caps: dict[str, int] | None = None, admission: Admission | None = None):
        self.caps = caps or {}
        self.admission = admission

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        full_name = handler_call_details.method.lstrip("/")
        service, _, method = full_name.rpartition("/")
        admission = self.admission if handler_call_details.method.startswith("/text2image.") else None
        # Handlers registered on a grpc.aio server are coroutine functions; the stubs type the sync kind.
        inner = cast(Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]], handler.unary_unary)

        async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with tracer.start_as_current_span(
                full_name,
                context=incoming(context.invocation_metadata()),
                kind=trace.SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
            ) as rpc_span:
                return await served(request, context, rpc_span)

        async def served(request: Any, context: grpc.aio.ServicerContext[Any, Any], rpc_span: trace.Span) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            admitted = False
            try:
                if isinstance(request, Refused):
                    raise request.error
                if admission is not None:
                    admission.admit(method, context.time_remaining())
                    admitted = True
                return await inner(request, context)
            except T2IError as exc:
                code, message = status_for(exc)
                logger.info("%s -> %s: %s", method, code.name, message)
                trailers: tuple[tuple[str, str], ...] = ()
                if isinstance(exc, Overloaded):
                    trailers = (("grpc-retry-pushback-ms", str(exc.retry_ms)),)
                await context.abort(code, message, trailers)
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                code = grpc.StatusCode.INTERNAL
                incident = uuid.uuid4().hex[:12]
                logger.exception("%s failed (incident %s)", method, incident)
                await context.abort(code, f"internal error (incident {incident}); see the gateway log")
            finally:
                rpc_span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code in SERVER_FAULTS:
                    rpc_span.set_status(trace.StatusCode.ERROR, code.name)
                if admitted:
                    admission.release(method, time.perf_counter() - start, code == grpc.StatusCode.OK)  # type: ignore[union-attr]
                REQUESTS.labels(method, code.name).inc()
                LATENCY.labels(method).observe(time.perf_counter() - start)

        parse = guarded(handler.request_deserializer, method, self.caps.get(method), admission)
        return grpc.unary_unary_rpc_method_handler(wrapper, request_deserializer=parse, response_serializer=handler.response_serializer)
