"""A probe method for the unit tests of the gateway's interceptors, served over real gRPC, and this process's spans in memory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core import errors
from tests.support.servers import real_server

Request = health_pb2.HealthCheckRequest
Response = health_pb2.HealthCheckResponse


# The one in-memory exporter that memory_spans installs on a provider (there is one provider per process).
_EXPORTERS: dict[TracerProvider, InMemorySpanExporter] = {}


def memory_spans() -> InMemorySpanExporter:
    """An exporter that keeps the spans this process finishes from now on.

    The global tracer provider can be set once per process: the first call installs an SDK
    provider (unless one is set already) and one in-memory exporter on it. Later calls return that
    exporter, cleared, so processors do not pile up and every span is exported once. A caller keeps
    what it gets until the next call (a module fixture: for the module's tests).
    """
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = _EXPORTERS.get(provider)
    if memory is None:
        memory = _EXPORTERS[provider] = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
    memory.clear()
    return memory


class Probe:
    """A unary handler that does what its request's ``service`` field says, and records what reached it.

    ``ok``: answers SERVING; ``abort:CODE``: aborts with that code itself; ``domain:NAME``: raises
    ``core.errors.NAME``; ``bug``: raises a KeyError with a secret in its message.
    """

    def __init__(self) -> None:
        self.reached: list[str] = []

    async def __call__(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> health_pb2.HealthCheckResponse:
        command = request.service
        self.reached.append(command)
        kind, _, name = command.partition(":")
        if kind == "abort":
            await context.abort(grpc.StatusCode[name], f"the probe aborted with {name}")
        if kind == "domain":
            raise getattr(errors, name)(f"the probe raised {name}")
        if kind == "bug":
            raise KeyError("secret internals")
        return Response(status=Response.SERVING)


@contextlib.asynccontextmanager
async def probe_channel(interceptors: list[grpc.aio.ServerInterceptor], probe: Probe, path: str) -> AsyncIterator[grpc.aio.Channel]:
    """A real server with ``probe`` at ``path`` (``/package.Service/Method``) behind ``interceptors``, and a channel to it."""
    service, method = path.strip("/").split("/")

    def register(server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(probe, request_deserializer=Request.FromString, response_serializer=Response.SerializeToString)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {method: handler})])

    async with real_server(interceptors, register) as address, grpc.aio.insecure_channel(address) as channel:
        yield channel


async def outcome(channel: grpc.aio.Channel, path: str, command: str | bytes, metadata: tuple[tuple[str, str], ...] = ()) -> tuple[grpc.StatusCode, str]:
    """The code and details of one call of ``path`` with ``command`` (a probe command, or raw bytes to send as they are)."""
    raw = isinstance(command, bytes)
    call = channel.unary_unary(path, request_serializer=None if raw else Request.SerializeToString, response_deserializer=Response.FromString)
    try:
        await call(command if raw else Request(service=command), metadata=metadata or None, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""
