"""Load shedding over a real gRPC server: a full gateway refuses at once with a retry hint, health is never shed,
a request whose deadline cannot be met is refused before it starts, and the service recovers when the load stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from gateway.admission import Admission, AdmissionInterceptor
from tests.support.servers import real_server

METHOD = "/text2image.v1.SearchService/SearchText"


class Gated:
    """A handler that holds each request until ``gate`` is set, and counts how many it started."""

    def __init__(self, open_gate: bool = False):
        self.started = 0
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()
        self._arrived = asyncio.Condition()

    async def __call__(self, request: bytes, context: Any) -> bytes:
        self.started += 1
        async with self._arrived:
            self._arrived.notify_all()
        await self.gate.wait()
        return request

    async def until_started(self, count: int) -> None:
        """Wait until ``count`` requests are inside the handler (so they hold their slots)."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: self.started >= count), 10)


@contextlib.asynccontextmanager
async def shedding_server(admission: Admission, handler: Gated) -> AsyncIterator[grpc.aio.Channel]:
    def register(server: grpc.aio.Server) -> None:
        service = grpc.method_handlers_generic_handler("text2image.v1.SearchService", {"SearchText": grpc.unary_unary_rpc_method_handler(handler)})
        server.add_generic_rpc_handlers([service])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)

    async with real_server([AdmissionInterceptor(admission=admission)], register) as address, grpc.aio.insecure_channel(address) as channel:
        yield channel


async def outcome(channel: grpc.aio.Channel, timeout: float = 10) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
    call = method(b"q", timeout=timeout)
    try:
        await call
        return grpc.StatusCode.OK, "", {}
    except grpc.aio.AioRpcError as exc:
        trailers = {key: value for key, value in (exc.trailing_metadata() or ()) if isinstance(value, str)}
        return exc.code(), exc.details() or "", trailers


def shed_busy() -> float:
    return REGISTRY.get_sample_value("t2i_shed_total", {"method": "SearchText", "reason": "busy"}) or 0.0


async def test_a_full_gateway_refuses_at_once_with_a_retry_hint_and_recovers() -> None:
    handler = Gated()
    admission = Admission(2)
    busy_before = shed_busy()
    async with shedding_server(admission, handler) as channel:
        held = [asyncio.ensure_future(outcome(channel)) for _ in range(2)]
        await handler.until_started(2)  # both slots are taken, and stay taken until the gate opens
        assert admission.in_flight == 2
        refused = await asyncio.gather(*(outcome(channel) for _ in range(4)))
        checked = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert checked.status == health_pb2.HealthCheckResponse.SERVING  # health is never shed
        handler.gate.set()
        assert await asyncio.gather(*held) == [(grpc.StatusCode.OK, "", {})] * 2
        # No request had finished when these came, so the hint is the floor: 10 ms.
        hint = "the gateway is at its limit of 2 requests in flight; retry in about 10 ms with backoff, or on another replica"
        assert refused == [(grpc.StatusCode.RESOURCE_EXHAUSTED, hint, {"grpc-retry-pushback-ms": "10"})] * 4
        assert handler.started == 2  # refused requests never reached the handler
        assert await outcome(channel) == (grpc.StatusCode.OK, "", {})  # recovered as soon as the load stopped
        assert admission.in_flight == 0
    assert shed_busy() - busy_before == 4


async def test_a_deadline_too_short_for_the_method_is_refused_before_work() -> None:
    handler = Gated(open_gate=True)
    admission = Admission(4)
    async with shedding_server(admission, handler) as channel:
        assert (await outcome(channel))[0] == grpc.StatusCode.OK
        assert "SearchText" in admission.latency_s  # a served request teaches the gateway how long the method takes
        admission.latency_s["SearchText"] = 20.0  # as if it took 20 s here: a 5 s deadline leaves less than half of that
        started = handler.started
        code, details, _ = await outcome(channel, timeout=5)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert details.startswith("the deadline leaves ") and details.endswith(" ms; SearchText takes about 20000 ms here, so it was not started")
        assert handler.started == started
        assert (await outcome(channel, timeout=60))[0] == grpc.StatusCode.OK  # enough time: served


@pytest.mark.parametrize(
    ("latencies", "hint_ms"),
    [
        ([0.1], 100),  # the first latency is the average
        ([0.1, 0.2, 0.3], 129),  # then each moves it by a tenth of the difference: 0.1, 0.11, 0.129
    ],
)
def test_latency_average_and_hint(latencies: list[float], hint_ms: int) -> None:
    admission = Admission(1)
    for seconds in latencies:
        admission.admit("M", None)
        assert admission.full
        admission.release("M", seconds, ok=True)
    assert not admission.full and admission.in_flight == 0
    assert admission.retry_hint_ms("M") == hint_ms
    assert admission.retry_hint_ms("unknown") == 10
    admission.admit("M", None)
    admission.release("M", 5.0, ok=False)  # a failed request's latency is left out
    assert admission.retry_hint_ms("M") == hint_ms
