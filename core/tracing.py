"""OpenTelemetry tracing: a span per RPC with children for tokenizing, decoding, Triton and Milvus.

Code opens spans through the OpenTelemetry API only; they cost next to nothing until ``configure``
installs an SDK provider, which it does only when an OTLP endpoint is set (``T2I_OTLP_ENDPOINT``
or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``). The W3C trace context comes in with the gRPC
metadata of a request and goes out with each Triton call, so one trace spans client, gateway and
Triton.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context

logger = logging.getLogger(__name__)

tracer = trace.get_tracer("text2image")


def recording() -> bool:
    """True when an SDK tracer provider is installed (``configure``, or a test's); with the API's own, every span is a no-op."""
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A child span of the current one (an internal step: tokenize, decode, a downstream call).

    With no SDK provider nothing is opened (about 15 us a span saved): the API's no-op span would
    carry its parent's context unchanged, so what ``outgoing`` sends on is the same either way.
    """
    if not recording():
        yield trace.get_current_span()
        return
    with tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


def incoming(metadata: Iterable[tuple[str, Any]] | None) -> Context:
    """The trace context a request's gRPC metadata carries (``traceparent``), or an empty one."""
    return propagate.extract({key: value for key, value in metadata or () if isinstance(value, str)})


def outgoing() -> list[tuple[str, str]]:
    """The current trace context as gRPC metadata for a downstream call (``traceparent``, ``tracestate``)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def configure(service_name: str, endpoint: str = "") -> bool:
    """Export spans over OTLP/gRPC when ``endpoint`` (or ``OTEL_EXPORTER_OTLP_ENDPOINT``) is set; True when it did."""
    endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    if not endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    logger.info("tracing: spans go to %s over OTLP", endpoint)
    return True
