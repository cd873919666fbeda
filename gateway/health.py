"""Readiness: SERVING only while Triton has both models and Milvus has the active collection loaded.

``grpc.health.v1`` answers for the empty service name and each text2image service with
readiness, and for ``liveness`` with SERVING for as long as the process runs.
"""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

from gateway.metrics import READY
from gateway.warmup import WarmUp
from search.engine import SearchEngine
from text2image.v1 import text2image_pb2 as pb

logger = logging.getLogger(__name__)

LIVENESS = "liveness"
# The full names of the API's services, from the proto itself; health answers for each and for "".
SERVICE_NAMES = tuple(service.full_name for service in pb.DESCRIPTOR.services_by_name.values())
SERVICES = ("", *SERVICE_NAMES)


async def not_serving_yet(servicer: health.aio.HealthServicer) -> None:
    """Answer NOT_SERVING for every service until the first readiness check (grpcio's servicer starts with "" SERVING)."""
    for name in SERVICES:
        await servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)


class ReadinessMonitor:
    """Re-checks readiness every ``interval_s`` and publishes it through the health servicer."""

    def __init__(self, engine: SearchEngine, servicer: health.aio.HealthServicer, interval_s: float, warm_up: WarmUp | None = None):
        self.engine = engine
        self.servicer = servicer
        self.interval_s = interval_s
        self.serving: bool | None = None
        self.warm_up = warm_up

    async def _ready(self) -> bool:
        try:
            return await asyncio.wait_for(self.engine.ready(), timeout=max(self.interval_s * 2, 5.0))
        except Exception:
            logger.exception("readiness check failed")
            return False

    async def check_once(self) -> bool:
        """Check readiness now and publish it."""
        ready = await self._ready()
        if ready and self.warm_up is not None and not self.warm_up.finished:
            await self.warm_up.run()  # bounded: before the first SERVING, or (no collection then) once one is active
            ready = await self._ready()  # the warm-up can take seconds (a failing server is often why): publish what holds after it
        if ready != self.serving:
            logger.info("readiness: %s", "SERVING" if ready else "NOT_SERVING")
            self.serving = ready
        READY.set(1 if ready else 0)
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in SERVICES:
            await self.servicer.set(name, status)
        return ready

    async def run(self) -> None:
        """Check forever (until cancelled: the server is shutting down, and ``t2i_ready`` drops to 0)."""
        await self.servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        try:
            while True:
                await self.check_once()
                await asyncio.sleep(self.interval_s)
        finally:
            READY.set(0)
