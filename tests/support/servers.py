"""Real in-process gRPC servers for unit tests of interceptors, TLS and shedding."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import grpc

from core.listen import bound_address
from core.settings import GatewaySettings
from gateway.server import add_port


@contextlib.asynccontextmanager
async def real_server(
    interceptors: list[grpc.aio.ServerInterceptor], register: Callable[[grpc.aio.Server], None], settings: GatewaySettings | None = None
) -> AsyncIterator[str]:
    """A started server with ``register``'s services behind ``interceptors``; yields the address it bound.

    ``settings`` choose plaintext or TLS (``gateway.server.add_port``); their ``listen`` is used when
    given, port 0 (any free port) by default.
    """
    server = grpc.aio.server(interceptors=interceptors)
    register(server)
    settings = settings or GatewaySettings(listen="127.0.0.1:0", auth="open")
    _, port = add_port(server, settings)
    await server.start()
    try:
        yield bound_address(settings.listen, port)
    finally:
        await server.stop(None)
