"""Real in-process gRPC servers for unit tests of interceptors, TLS and shedding."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import grpc

from core.settings import GatewaySettings
from devstack.process import free_port
from gateway.server import add_port


@contextlib.asynccontextmanager
async def real_server(
    interceptors: list[grpc.aio.ServerInterceptor], register: Callable[[grpc.aio.Server], None], settings: GatewaySettings | None = None
) -> AsyncIterator[str]:
    """A started server with ``register``'s services behind ``interceptors``; yields its loopback address.

    ``settings`` choose plaintext or TLS (``gateway.server.add_port``); their ``listen`` is used when given.
    """
    server = grpc.aio.server(interceptors=interceptors)
    register(server)
    settings = settings or GatewaySettings(listen=f"127.0.0.1:{free_port()}", auth="open")
    add_port(server, settings)
    await server.start()
    try:
        yield settings.listen
    finally:
        await server.stop(None)
