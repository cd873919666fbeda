"""The telemetry interceptor: each RPC's server span (unary or server-streaming), and its request and latency metrics.

It is the outermost interceptor, so every answer is traced and counted with the code the client
got, the refusals of auth and admission included. The span continues the caller's trace
(``traceparent`` metadata), carries the gRPC attributes of OpenTelemetry's conventions, and is
marked as an error only for the codes of a server-side failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from opentelemetry import trace

from core.tracing import incoming, tracer
from gateway.interceptors import Continuation, method_name, observed, observed_stream, rewrapped, rewrapped_stream, stream_behavior, unary_behavior
from gateway.metrics import LATENCY, REQUESTS

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


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    """Opens a server span per unary RPC and counts it in ``t2i_requests_total`` and ``t2i_request_seconds``."""

    async def intercept_service(self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        full_name = handler_call_details.method.lstrip("/")
        service = full_name.rpartition("/")[0]
        method = method_name(handler_call_details)
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        stream = stream_behavior(handler)
        if handler is not None and stream is not None:

            async def traced_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                # Not the current span: a context attached across the generator's yields cannot be detached when grpc
                # closes it from another context (a cancelled stream); the span is ended by hand instead.
                span = tracer.start_span(full_name, context=incoming(context.invocation_metadata()), kind=trace.SpanKind.SERVER, attributes=attributes)
                try:
                    async for response in observed_stream(stream, request, context, _recorder(span, method)):
                        yield response
                finally:
                    span.end()

            return rewrapped_stream(handler, traced_stream)
        inner = unary_behavior(handler)
        if handler is None or inner is None:
            return handler

        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with _server_span(full_name, context, attributes) as span:
                return await observed(inner, request, context, _recorder(span, method))

        return rewrapped(handler, traced)


def _server_span(full_name: str, context: grpc.aio.ServicerContext[Any, Any], attributes: dict[str, str]) -> Any:
    """The RPC's server span, continuing the caller's trace."""
    # Every refusal ends in an abort: the span's status comes from the gRPC code, not from that exception.
    return tracer.start_as_current_span(
        full_name,
        context=incoming(context.invocation_metadata()),
        kind=trace.SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    )


def _recorder(span: trace.Span, method: str) -> Callable[[grpc.StatusCode, float, Exception | None], None]:
    """What ``observed`` calls at the end of an RPC: the span's status and the request and latency metrics."""

    def done(code: grpc.StatusCode, seconds: float, unmapped: Exception | None) -> None:
        if unmapped is not None:
            span.record_exception(unmapped)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in SERVER_FAULTS:
            span.set_status(trace.StatusCode.ERROR, code.name)
        REQUESTS.labels(method, code.name).inc()
        LATENCY.labels(method).observe(seconds)

    return done
