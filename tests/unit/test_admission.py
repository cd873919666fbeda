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

from gateway.admission import SHED, Admission
from gateway.interceptors import ErrorMappingInterceptor
from tests.unit.servers import real_server

METHOD = "/text2image.v1.SearchService/SearchText"


class Slow:
    """A handler that takes ``delay_s`` and counts how many requests it started."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.started = 0

    async def __call__(self, request: bytes, context: Any) -> bytes:
        self.started += 1
        await asyncio.sleep(self.delay_s)
        return request


@contextlib.asynccontextmanager
async def shedding_server(limit: int, handler: Slow) -> AsyncIterator[grpc.aio.Channel]:
    def register(server: grpc.aio.Server) -> None:
        service = grpc.method_handlers_generic_handler("text2image.v1.SearchService", {"SearchText": grpc.unary_unary_rpc_method_handler(handler)})
        server.add_generic_rpc_handlers([service])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)

    async with real_server([ErrorMappingInterceptor(admission=Admission(limit))], register) as address, grpc.aio.insecure_channel(address) as channel:
        yield channel


async def outcome(channel: grpc.aio.Channel, timeout: float = 10) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    call = channel.unary_unary(METHOD)(b"q", timeout=timeout)
    try:
        await call
        return grpc.StatusCode.OK, "", {}
    except grpc.aio.AioRpcError as exc:
        trailers = {key: value for key, value in (exc.trailing_metadata() or ()) if isinstance(value, str)}
        return exc.code(), exc.details() or "", trailers


async def test_a_full_gateway_refuses_at_once_with_a_retry_hint_and_recovers() -> None:
    handler = Slow(0.3)
    busy_before = SHED.labels("SearchText", "busy")._value.get()
    async with shedding_server(2, handler) as channel:
        results = await asyncio.gather(
            *(outcome(channel) for _ in range(6)), health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        )
        *calls, checked = results
        codes = [code for code, _, _ in calls]
        assert codes.count(grpc.StatusCode.OK) == 2 and codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4
        assert handler.started == 2  # refused requests never reached the handler
        refused = next(item for item in calls if item[0] == grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "limit of 2 requests in flight; retry in about" in refused[1] and int(refused[2]["grpc-retry-pushback-ms"]) >= 10
        assert checked.status == health_pb2.HealthCheckResponse.SERVING  # health is never shed
        assert await outcome(channel) == (grpc.StatusCode.OK, "", {})  # recovered as soon as the load stopped
    assert SHED.labels("SearchText", "busy")._value.get() - busy_before == 4


async def test_a_deadline_too_short_for_the_method_is_refused_before_work() -> None:
    handler = Slow(0.2)
    async with shedding_server(4, handler) as channel:
        assert (await outcome(channel))[0] == grpc.StatusCode.OK  # teaches the gateway that the method takes about 200 ms
        started = handler.started
        code, details, _ = await outcome(channel, timeout=0.05)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "was not started" in details
        assert handler.started == started
        assert (await outcome(channel, timeout=2))[0] == grpc.StatusCode.OK  # enough time: served


@pytest.mark.parametrize("latencies", [[0.1], [0.1, 0.2, 0.3]])
def test_latency_average_and_hint(latencies: list[float]) -> None:
    admission = Admission(1)
    for seconds in latencies:
        admission.admit("M", None)
        assert admission.full
        admission.release("M", seconds, ok=True)
    assert not admission.full and admission.in_flight == 0
    assert 100 <= admission.retry_hint_ms("M") <= 300
    assert admission.retry_hint_ms("unknown") == 10
