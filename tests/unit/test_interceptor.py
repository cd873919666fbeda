"""Domain errors map to gRPC status codes in one place, over a real in-process gRPC server."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core import errors
from devstack.process import free_port
from gateway.interceptors import ErrorMappingInterceptor, status_for

CASES = [
    (errors.InvalidArgument("bad top_k"), grpc.StatusCode.INVALID_ARGUMENT, "bad top_k"),
    (errors.NotFound("no such id"), grpc.StatusCode.NOT_FOUND, "no such id"),
    (errors.FailedPrecondition("other model"), grpc.StatusCode.FAILED_PRECONDITION, "other model"),
    (errors.Unavailable("triton down"), grpc.StatusCode.UNAVAILABLE, "triton down"),
    (errors.DeadlineExceeded("late"), grpc.StatusCode.DEADLINE_EXCEEDED, "late"),
    (errors.ResourceExhausted("too big"), grpc.StatusCode.RESOURCE_EXHAUSTED, "too big"),
    (KeyError("secret internals"), grpc.StatusCode.INTERNAL, "internal error"),
]


@pytest.mark.parametrize(("error", "code", "message"), CASES)
def test_status_for(error: Exception, code: grpc.StatusCode, message: str) -> None:
    assert status_for(error) == (code, message if code != grpc.StatusCode.INTERNAL else "internal error")


class Raising(health_pb2_grpc.HealthServicer):
    """A health 'Check' handler that raises the error named by the request's service field."""

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        index = int(request.service)
        if index < len(CASES):
            raise CASES[index][0]
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def test_interceptor_over_real_grpc() -> None:
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    health_pb2_grpc.add_HealthServicer_to_server(Raising(), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for index, (_, code, message) in enumerate(CASES):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Check(health_pb2.HealthCheckRequest(service=str(index)), timeout=5)
                assert caught.value.code() == code
                assert message in caught.value.details()
                assert "secret" not in caught.value.details()
            ok = await stub.Check(health_pb2.HealthCheckRequest(service="99"), timeout=5)
            assert ok.status == health_pb2.HealthCheckResponse.SERVING  # still serving after every error
    finally:
        await server.stop(None)
