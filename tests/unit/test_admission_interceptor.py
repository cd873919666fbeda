"""The admission interceptor alone over real gRPC: it refuses before parsing (size cap, bad bytes, a full gateway), holds a slot
per call, and leaves the rest to the other layers (no mapping of a handler's errors, no counting, no span)."""

from __future__ import annotations

import grpc
from prometheus_client import REGISTRY

from gateway.admission import Admission, AdmissionInterceptor
from tests.support.probes import Probe, outcome, probe_channel

PATH = "/text2image.v1.AdmissionProbe/Admitted"  # a text2image.* method: shed under overload


def requests_counted() -> float:
    codes = [code.name for code in grpc.StatusCode]
    return sum(REGISTRY.get_sample_value("t2i_requests_total", {"method": "Admitted", "code": code}) or 0.0 for code in codes)


async def test_refusals_come_before_parsing_and_the_handler_and_every_call_frees_its_slot() -> None:
    probe = Probe()
    admission = Admission(1)
    async with probe_channel([AdmissionInterceptor({"Admitted": 64}, admission)], probe, PATH) as channel:
        assert await outcome(channel, PATH, "x" * 100) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Admitted requests are limited to 64 bytes; this one is 102 bytes",
        )
        for payload in (b"\x0a\x02\xff\xfe", b"\x0a\x05ab"):  # invalid UTF-8 in the string field; a truncated message
            code, details = await outcome(channel, PATH, payload)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("the Admitted request does not parse")
        assert probe.reached == []  # none of them reached the handler
        assert admission.in_flight == 0 and "Admitted" not in admission.latency_s

        # What the handler raises is not admission's to map (that is the error interceptor's job): grpc's UNKNOWN.
        assert (await outcome(channel, PATH, "domain:InvalidArgument"))[0] == grpc.StatusCode.UNKNOWN
        assert (await outcome(channel, PATH, "abort:NOT_FOUND")) == (grpc.StatusCode.NOT_FOUND, "the probe aborted with NOT_FOUND")
        assert admission.in_flight == 0 and "Admitted" not in admission.latency_s  # freed, and failures teach no latency
        assert await outcome(channel, PATH, "ok") == (grpc.StatusCode.OK, "")
        assert admission.in_flight == 0 and "Admitted" in admission.latency_s

        admission.in_flight = admission.max_in_flight  # as if another call held the only slot
        code, details = await outcome(channel, PATH, "ok")
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith("the gateway is at its limit of 1 requests in flight")
        admission.in_flight = 0
    assert probe.reached == ["domain:InvalidArgument", "abort:NOT_FOUND", "ok"]
    assert requests_counted() == 0  # counting is the telemetry interceptor's job


async def test_methods_beyond_text2image_are_capped_and_guarded_but_never_shed() -> None:
    probe = Probe()
    admission = Admission(1)
    admission.in_flight = 1  # full
    path = "/grpc.health.v1.Health/Check"
    async with probe_channel([AdmissionInterceptor({"Check": 64}, admission)], probe, path) as channel:
        assert await outcome(channel, path, "ok") == (grpc.StatusCode.OK, "")
        assert (await outcome(channel, path, "x" * 100))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await outcome(channel, path, b"\x0a\x05ab"))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert probe.reached == ["ok"] and admission.in_flight == 1
