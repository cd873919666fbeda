"""The readiness gauge ``t2i_ready`` follows what the health checker publishes, as Prometheus scrapes it."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from grpc_health.v1 import health, health_pb2
from prometheus_client import REGISTRY, generate_latest

from gateway.health import LIVENESS, ReadinessMonitor
from search.engine import SearchEngine

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class StubEngine:
    """``SearchEngine.ready`` only: returns ``answer``, or raises it when it is an exception."""

    def __init__(self) -> None:
        self.answer: bool | Exception = False

    async def ready(self) -> bool:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def scraped() -> float | None:
    """``t2i_ready`` as the metrics endpoint exposes it (the text Prometheus parses)."""
    for line in generate_latest(REGISTRY).decode().splitlines():
        if line.startswith("t2i_ready "):
            return float(line.split()[1])
    return None


async def status(servicer: health.aio.HealthServicer, service: str = "") -> int:
    answer = await servicer.Check(health_pb2.HealthCheckRequest(service=service), None)  # no context: every service asked is set
    return int(answer.status)


@pytest.fixture()
def monitor() -> tuple[ReadinessMonitor, StubEngine, health.aio.HealthServicer]:
    engine = StubEngine()
    servicer = health.aio.HealthServicer()
    return ReadinessMonitor(cast(SearchEngine, engine), servicer, interval_s=0.01), engine, servicer


async def test_the_gauge_is_1_exactly_while_health_says_serving(monitor: tuple[ReadinessMonitor, StubEngine, health.aio.HealthServicer]) -> None:
    checker, engine, servicer = monitor
    engine.answer = True
    assert await checker.check_once() is True
    assert scraped() == 1.0 and await status(servicer) == SERVING
    engine.answer = False  # Triton lost a model, or Milvus unloaded the collection
    assert await checker.check_once() is False
    assert scraped() == 0.0 and await status(servicer) == NOT_SERVING
    engine.answer = True
    await checker.check_once()
    engine.answer = RuntimeError("Milvus is gone")  # a check that fails counts as not ready
    assert await checker.check_once() is False
    assert scraped() == 0.0 and await status(servicer) == NOT_SERVING


async def test_the_gauge_drops_to_0_when_the_checker_stops_at_shutdown(monitor: tuple[ReadinessMonitor, StubEngine, health.aio.HealthServicer]) -> None:
    checker, engine, servicer = monitor
    engine.answer = True
    task = asyncio.create_task(checker.run())
    for _ in range(200):
        if scraped() == 1.0:
            break
        await asyncio.sleep(0.01)
    assert scraped() == 1.0 and await status(servicer, LIVENESS) == SERVING
    task.cancel()  # gateway.server.serve cancels the checker on SIGTERM, before draining
    with pytest.raises(asyncio.CancelledError):
        await task
    assert scraped() == 0.0
