"""Spans when nothing exports: ``core.tracing.span`` opens none, and the trace context sent on to Triton is the one that came in."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from core import tracing
from core.metrics import downstream

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture()
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the spans ``core.tracing`` opens (they are opened for real, as the proxy tracer does)."""
    names: list[str] = []
    start = tracing.tracer.start_as_current_span

    def recorded(name: str, *args: Any, **kwargs: Any) -> Any:
        names.append(name)
        return start(name, *args, **kwargs)

    monkeypatch.setattr(tracing.tracer, "start_as_current_span", recorded)
    return names


def test_no_span_is_opened_without_an_sdk_provider(monkeypatch: pytest.MonkeyPatch, opened: list[str]) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    with tracing.span("tokenize", texts=1), downstream("milvus", "search"):
        pass
    assert opened == []
    assert not tracing.recording()


def test_spans_are_opened_with_one(monkeypatch: pytest.MonkeyPatch, opened: list[str]) -> None:
    provider = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    assert tracing.recording()
    with tracing.span("tokenize", texts=1), downstream("milvus", "search"):
        pass
    assert opened == ["tokenize", "milvus search"]


def test_the_callers_trace_goes_on_to_triton_without_an_sdk_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    server_span = trace.NonRecordingSpan(trace.get_current_span(tracing.incoming([("traceparent", TRACEPARENT)])).get_span_context())
    with trace.use_span(server_span), contextlib.ExitStack() as steps:
        steps.enter_context(downstream("triton", "encode_text"))
        sent = dict(tracing.outgoing())
    assert sent["traceparent"] == TRACEPARENT
