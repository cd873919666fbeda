"""The gateway's own first encode and search before SERVING (gateway/warmup.py through ReadinessMonitor)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2

from core.errors import FailedPrecondition, Unavailable
from gateway.health import ReadinessMonitor, not_serving_yet
from gateway.warmup import QUERY, WarmUp
from search.engine import Embeddings, SearchEngine, SearchResult

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


async def status(servicer: health.aio.HealthServicer) -> int:
    return int((await servicer.Check(health_pb2.HealthCheckRequest(service=""), None)).status)


class StubEngine:
    """``ready``, ``embed_texts`` and ``search_text``; records each call with the health status published at that moment."""

    def __init__(self, servicer: health.aio.HealthServicer) -> None:
        self.servicer = servicer
        self.ready_answer = True
        self.collection: str | None = "t2i_1"
        self.search_error: Exception | None = None
        self.hang = False
        self.calls: list[tuple[str, bool]] = []

    async def ready(self) -> bool:
        return self.ready_answer

    async def _record(self, name: str) -> None:
        self.calls.append((name, await status(self.servicer) == SERVING))
        if self.hang:
            await asyncio.sleep(3600)

    async def embed_texts(self, texts: list[str], deadline: float | None) -> Embeddings:
        assert texts == [QUERY] and deadline is not None
        await self._record("encode")
        return Embeddings(np.zeros((1, 4), np.float32), "m", [False])

    async def search_text(self, query: str, top_k: int, *args: Any, **kwargs: Any) -> SearchResult:
        await self._record("search")
        if self.search_error is not None:
            raise self.search_error
        if self.collection is None:
            raise FailedPrecondition("nothing indexed yet: run 't2i reindex PATH' or send UpsertImages")
        return SearchResult([], self.collection, 1.0, "m")


async def monitor_with(timeout_s: float = 5.0) -> tuple[ReadinessMonitor, StubEngine, WarmUp]:
    servicer = health.aio.HealthServicer()
    await not_serving_yet(servicer)  # as gateway.server.serve does before the server starts
    engine = StubEngine(servicer)
    warm = WarmUp(cast(SearchEngine, engine), timeout_s)
    return ReadinessMonitor(cast(SearchEngine, engine), servicer, interval_s=0.01, warm_up=warm), engine, warm


async def test_health_says_not_serving_before_the_first_check() -> None:
    servicer = health.aio.HealthServicer()
    assert await status(servicer) == SERVING  # grpcio's default, before any check ran
    await not_serving_yet(servicer)
    assert await status(servicer) == NOT_SERVING


async def test_encode_and_search_run_before_the_first_serving(caplog: pytest.LogCaptureFixture) -> None:
    monitor, engine, warm = await monitor_with()
    with caplog.at_level(logging.INFO, logger="gateway.warmup"):
        assert await monitor.check_once() is True
    assert engine.calls == [("encode", False), ("search", False)]  # both before health said SERVING
    assert await status(monitor.servicer) == SERVING and warm.searched
    assert any("first search of t2i_1" in record.getMessage() for record in caplog.records)
    await monitor.check_once()
    assert len(engine.calls) == 2  # once per process


async def test_not_ready_runs_no_warm_up() -> None:
    monitor, engine, _ = await monitor_with()
    engine.ready_answer = False
    assert await monitor.check_once() is False
    assert engine.calls == []


async def test_no_collection_yet_serves_and_searches_once_one_is_active(caplog: pytest.LogCaptureFixture) -> None:
    monitor, engine, warm = await monitor_with()
    engine.collection = None
    with caplog.at_level(logging.INFO, logger="gateway.warmup"):
        for _ in range(3):
            assert await monitor.check_once() is True
            assert await status(monitor.servicer) == SERVING  # never held back, never flapping
    assert engine.calls[:2] == [("encode", False), ("search", False)]
    assert engine.calls[2:] == [("search", True), ("search", True)]  # the encode ran once
    assert sum("no search yet" in record.getMessage() for record in caplog.records) == 1  # said once, not every check
    engine.collection = "t2i_2"  # the first reindex swapped the alias in
    await monitor.check_once()
    assert warm.searched and engine.calls[-1] == ("search", True)
    await monitor.check_once()
    assert len(engine.calls) == 5


async def test_a_hanging_warm_up_is_cut_off_and_serving_follows(caplog: pytest.LogCaptureFixture) -> None:
    monitor, engine, warm = await monitor_with(timeout_s=0.05)
    engine.hang = True
    with caplog.at_level(logging.WARNING, logger="gateway.warmup"):
        assert await asyncio.wait_for(monitor.check_once(), timeout=30) is True
    assert await status(monitor.servicer) == SERVING and warm.gave_up
    assert any("serving without it" in record.getMessage() for record in caplog.records)
    await monitor.check_once()
    assert engine.calls == [("encode", False)]  # not tried again


async def test_a_failing_warm_up_does_not_hold_back_serving() -> None:
    monitor, engine, warm = await monitor_with()
    engine.search_error = Unavailable("Milvus: connection refused")
    assert await monitor.check_once() is True
    assert await status(monitor.servicer) == SERVING and warm.gave_up and not warm.searched


async def test_zero_seconds_turns_it_off() -> None:
    monitor, engine, _ = await monitor_with(timeout_s=0)
    assert await monitor.check_once() is True
    assert engine.calls == []


async def test_readiness_lost_during_the_warm_up_is_not_published_as_serving() -> None:
    monitor, engine, _ = await monitor_with()
    engine.search_error = Unavailable("Milvus went away during the warm-up")

    async def search_then_down(query: str, top_k: int, *args: Any, **kwargs: Any) -> SearchResult:
        engine.ready_answer = False  # the check before the warm-up said ready; the one after it does not
        return await StubEngine.search_text(engine, query, top_k, *args, **kwargs)

    engine.search_text = search_then_down  # type: ignore[method-assign]
    assert await monitor.check_once() is False
    assert await status(monitor.servicer) == NOT_SERVING  # before, the stale answer published SERVING, then flapped
