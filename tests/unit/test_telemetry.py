"""The telemetry interceptor alone over real gRPC: one server span and one count per RPC, with the code the client got, and nothing else."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from gateway.telemetry import TelemetryInterceptor
from tests.support.probes import Probe, memory_spans, outcome, probe_channel

PATH = "/t2i.test.TelemetryProbe/Traced"
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    return memory_spans()


def counted(code: str) -> float:
    return REGISTRY.get_sample_value("t2i_requests_total", {"method": "Traced", "code": code}) or 0.0


def timed() -> float:
    return REGISTRY.get_sample_value("t2i_request_seconds_count", {"method": "Traced"}) or 0.0


# What the handler does, what the client gets, and whether the span is marked as a server fault.
CASES = [
    ("ok", grpc.StatusCode.OK, False),
    ("abort:INVALID_ARGUMENT", grpc.StatusCode.INVALID_ARGUMENT, False),
    ("abort:NOT_FOUND", grpc.StatusCode.NOT_FOUND, False),
    ("abort:RESOURCE_EXHAUSTED", grpc.StatusCode.RESOURCE_EXHAUSTED, False),
    ("abort:UNAUTHENTICATED", grpc.StatusCode.UNAUTHENTICATED, False),
    ("abort:UNAVAILABLE", grpc.StatusCode.UNAVAILABLE, True),
    ("abort:INTERNAL", grpc.StatusCode.INTERNAL, True),
    ("abort:DEADLINE_EXCEEDED", grpc.StatusCode.DEADLINE_EXCEEDED, True),
    # A domain error is not telemetry's to map: grpc answers UNKNOWN, and that is what is counted.
    ("domain:InvalidArgument", grpc.StatusCode.UNKNOWN, True),
]


@pytest.mark.parametrize(("command", "code", "fault"), CASES)
async def test_each_rpc_is_one_server_span_and_one_count_with_the_code_the_client_got(
    spans: InMemorySpanExporter, command: str, code: grpc.StatusCode, fault: bool
) -> None:
    probe = Probe()
    before, seconds = counted(code.name), timed()
    spans.clear()
    async with probe_channel([TelemetryInterceptor()], probe, PATH) as channel:
        metadata = (("traceparent", f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"),)
        assert (await outcome(channel, PATH, command, metadata))[0] == code
    assert probe.reached == [command]
    assert counted(code.name) - before == 1 and timed() - seconds == 1
    [span] = spans.get_finished_spans()
    assert span.name == "t2i.test.TelemetryProbe/Traced" and span.kind == trace.SpanKind.SERVER and span.context is not None
    assert f"{span.context.trace_id:032x}" == CLIENT_TRACE  # the caller's trace goes on
    assert dict(span.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "t2i.test.TelemetryProbe",
        "rpc.method": "Traced",
        "rpc.grpc.status_code": code.value[0],
    }
    # Only a server-side failure marks the span, named by its code (not by the abort that carried it).
    expected = (trace.StatusCode.ERROR, code.name) if fault else (trace.StatusCode.UNSET, None)
    assert (span.status.status_code, span.status.description) == expected
    assert [event.name for event in span.events] == ([] if code != grpc.StatusCode.UNKNOWN else ["exception"])
