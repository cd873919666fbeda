"""The error-mapping interceptor alone over real gRPC: it maps what the handler raises, lets the handler's own status through,
and does nothing else (no size cap, no count, no span). The table of codes is in test_interceptor.py."""

from __future__ import annotations

import logging
import re

import grpc
import pytest
from prometheus_client import REGISTRY

from gateway.errors import ErrorMappingInterceptor
from tests.support.probes import Probe, memory_spans, outcome, probe_channel

PATH = "/text2image.v1.MappingProbe/Mapped"


def requests_counted() -> float:
    return sum(REGISTRY.get_sample_value("t2i_requests_total", {"method": "Mapped", "code": code.name}) or 0.0 for code in grpc.StatusCode)


async def test_it_maps_what_the_handler_raises_and_nothing_else(caplog: pytest.LogCaptureFixture) -> None:
    probe = Probe()
    spans = memory_spans()
    async with probe_channel([ErrorMappingInterceptor()], probe, PATH) as channel:
        assert await outcome(channel, PATH, "domain:NotFound") == (grpc.StatusCode.NOT_FOUND, "the probe raised NotFound")
        assert await outcome(channel, PATH, "domain:Unavailable") == (grpc.StatusCode.UNAVAILABLE, "the probe raised Unavailable")
        # A status the handler chose itself goes through as it is.
        assert await outcome(channel, PATH, "abort:PERMISSION_DENIED") == (grpc.StatusCode.PERMISSION_DENIED, "the probe aborted with PERMISSION_DENIED")
        with caplog.at_level(logging.ERROR, logger="gateway.errors"):
            code, details = await outcome(channel, PATH, "bug")
        assert code == grpc.StatusCode.INTERNAL and "secret" not in details
        incident = re.fullmatch(r"internal error \(incident ([0-9a-f]{12})\); see the gateway log", details)
        assert incident is not None and f"Mapped failed (incident {incident.group(1)})" in caplog.text and "KeyError" in caplog.text
        assert await outcome(channel, PATH, "x" * 10_000) == (grpc.StatusCode.OK, "")  # capping sizes is admission's job
    assert probe.reached == ["domain:NotFound", "domain:Unavailable", "abort:PERMISSION_DENIED", "bug", "x" * 10_000]
    assert requests_counted() == 0  # counting and tracing are the telemetry interceptor's job
    assert [span.name for span in spans.get_finished_spans() if span.name.endswith("/Mapped")] == []
