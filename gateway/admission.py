"""Load shedding: a bound on the requests in flight, and refusing requests whose deadline cannot be met.

A gateway that queues without bound answers everyone late: at 256 clients every request waited
about a second, and clients with short deadlines got DEADLINE_EXCEEDED after the server had done
the work anyway. Here a request beyond ``max_in_flight`` is refused at once with
RESOURCE_EXHAUSTED and a retry hint (also in the ``grpc-retry-pushback-ms`` trailer), before its
body is parsed; the accepted ones keep a latency bounded by the limit. A request whose deadline
leaves less than half of what the method usually takes is refused with DEADLINE_EXCEEDED before
it costs work. Health and reflection are never shed.

``AdmissionInterceptor`` applies this bound, and also caps each method's request size and guards
parsing: a request larger than its method's cap is refused with RESOURCE_EXHAUSTED before it is
parsed, and bytes that do not parse (invalid UTF-8 in a string field, a truncated message) get
INVALID_ARGUMENT instead of grpc's UNKNOWN. All three share one wrapper of the request
deserializer, which never raises: it hands the call a ``Refused`` instead, and the call answers it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Gauge

from core.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, T2IError
from gateway.errors import status_for
from gateway.interceptors import (
    Continuation,
    StreamBehavior,
    method_name,
    observed,
    observed_stream,
    rewrapped,
    rewrapped_stream,
    stream_behavior,
    unary_behavior,
)

logger = logging.getLogger(__name__)

SHED = Counter("t2i_shed_total", "Requests refused before any work, by method and reason (busy, deadline)", ["method", "reason"])
IN_FLIGHT = Gauge("t2i_in_flight_requests", "Requests being served now")

SMOOTHING = 0.1  # weight of the newest latency in the moving average
MIN_HINT_MS = 10


class Overloaded(ResourceExhausted):
    """The gateway is full; ``retry_ms`` is how long to wait before trying again."""

    def __init__(self, message: str, retry_ms: int):
        super().__init__(message)
        self.retry_ms = retry_ms


class Admission:
    """Counts the requests in flight and keeps a moving average of each method's latency."""

    def __init__(self, max_in_flight: int):
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.latency_s: dict[str, float] = {}

    @property
    def full(self) -> bool:
        """True when no request can be taken now."""
        return self.in_flight >= self.max_in_flight

    def busy(self, method: str) -> Overloaded:
        """The refusal for a request that finds the gateway full (counted)."""
        SHED.labels(method, "busy").inc()
        hint = self.retry_hint_ms(method)
        return Overloaded(
            f"the gateway is at its limit of {self.max_in_flight} requests in flight; retry in about {hint} ms with backoff, or on another replica", hint
        )

    def retry_hint_ms(self, method: str) -> int:
        """How long a refused client should wait: about one request's time at this load."""
        return max(MIN_HINT_MS, round(self.latency_s.get(method, 0.0) * 1000))

    def admit(self, method: str, remaining_s: float | None) -> None:
        """Take a slot for a request with ``remaining_s`` left of its deadline.

        Raises:
            Overloaded: the gateway is full (a ``ResourceExhausted``).
            DeadlineExceeded: the deadline leaves less than half of the method's usual latency.
        """
        if self.full:
            raise self.busy(method)
        usual = self.latency_s.get(method)
        if remaining_s is not None and usual is not None and remaining_s < usual / 2:
            SHED.labels(method, "deadline").inc()
            raise DeadlineExceeded(f"the deadline leaves {remaining_s * 1000:.0f} ms; {method} takes about {usual * 1000:.0f} ms here, so it was not started")
        self.in_flight += 1
        IN_FLIGHT.set(self.in_flight)

    def release(self, method: str, seconds: float, ok: bool) -> None:
        """Free the slot; a successful request's latency feeds the method's average."""
        self.in_flight -= 1
        IN_FLIGHT.set(self.in_flight)
        if ok:
            previous = self.latency_s.get(method)
            self.latency_s[method] = seconds if previous is None else previous + SMOOTHING * (seconds - previous)


class Refused:
    """What a guarded deserializer returns instead of a request it refused; the call answers ``error``."""

    def __init__(self, error: T2IError):
        self.error = error


def readable_size(count: int) -> str:
    """``count`` bytes as the refusals word it: bytes below 10 KiB, whole KiB above."""
    return f"{count} bytes" if count < 10 * 1024 else f"{count / 1024:.0f} KiB"


def guarded(deserializer: Callable[[bytes], Any] | None, method: str, cap: int | None, admission: Admission | None = None) -> Callable[[bytes], Any]:
    """``deserializer`` behind a size cap (bytes, None: none) and the admission bound, never raising: it returns ``Refused`` instead."""

    def parse(data: bytes) -> Any:
        if admission is not None and admission.full:
            return Refused(admission.busy(method))
        if cap is not None and len(data) > cap:
            return Refused(ResourceExhausted(f"{method} requests are limited to {readable_size(cap)}; this one is {readable_size(len(data))}"))
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except DecodeError:
            return Refused(InvalidArgument(f"the {method} request does not parse: string fields must be valid UTF-8, and the message must be complete"))

    return parse


async def refuse(context: grpc.aio.ServicerContext[Any, Any], method: str, error: T2IError) -> NoReturn:
    """Answer a refused call with ``error``'s status, and a retry hint in the trailers when the gateway is full."""
    code, message = status_for(error)
    logger.info("%s -> %s: %s", method, code.name, message)
    trailers = (("grpc-retry-pushback-ms", str(error.retry_ms)),) if isinstance(error, Overloaded) else ()
    await context.abort(code, message, trailers)


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Refuses, before parsing, what the gateway will not take now; the rest goes on to the layers below.

    ``caps`` limits the serialized size of requests by method name (``SearchText``: a few MiB);
    ``admission`` sheds the methods of ``text2image.*`` services under overload (None: no shedding).
    """

    def __init__(self, caps: dict[str, int] | None = None, admission: Admission | None = None):
        self.caps = caps or {}
        self.admission = admission

    async def intercept_service(self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = method_name(handler_call_details)
        admission = self.admission if handler_call_details.method.startswith("/text2image.") else None
        stream = stream_behavior(handler)
        if handler is not None and stream is not None:
            return rewrapped_stream(
                handler, admitted_stream(stream, method, admission), guarded(handler.request_deserializer, method, self.caps.get(method), admission)
            )
        inner = unary_behavior(handler)
        if handler is None or inner is None:
            return handler

        async def admitted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, Refused):
                await refuse(context, method, request.error)
            if admission is None:
                return await inner(request, context)
            try:
                admission.admit(method, context.time_remaining())
            except T2IError as exc:  # full, or a deadline too short for the method
                await refuse(context, method, exc)
            return await observed(inner, request, context, lambda code, seconds, _: admission.release(method, seconds, code == grpc.StatusCode.OK))

        return rewrapped(handler, admitted, guarded(handler.request_deserializer, method, self.caps.get(method), admission))


def admitted_stream(inner: StreamBehavior, method: str, admission: Admission | None) -> StreamBehavior:
    """A server-streaming call under the same bound: it holds its slot until the stream ends.

    Its deadline is not held to a usual latency, and its time does not feed one: how long a stream
    runs depends on what it asks (FindDuplicates' max_images), not on the load.
    """

    async def admitted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        if isinstance(request, Refused):
            await refuse(context, method, request.error)
        if admission is None:
            async for response in inner(request, context):
                yield response
            return
        try:
            admission.admit(method, None)
        except T2IError as exc:  # full
            await refuse(context, method, exc)
        async for response in observed_stream(inner, request, context, lambda code, seconds, _: admission.release(method, seconds, False)):
            yield response

    return admitted
