"""Domain errors map to gRPC status codes in one place, over a real in-process gRPC server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core import errors
from core.filters import MAX_FILTER_IDS, MAX_FILTER_LABELS, MAX_VALUE_BYTES
from core.records import MAX_ID_BYTES, MAX_LABEL_BYTES
from core.settings import GatewaySettings
from gateway.admission import AdmissionInterceptor
from gateway.errors import ErrorMappingInterceptor, status_for
from gateway.server import request_caps
from search.validation import MAX_QUERY_BYTES
from tests.support.servers import real_server
from text2image.v1 import text2image_pb2 as pb

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


@contextlib.asynccontextmanager
async def raising_server(interceptor: grpc.aio.ServerInterceptor) -> AsyncIterator[grpc.aio.Channel]:
    """A real gRPC server with ``Raising`` behind ``interceptor``, and a channel to it."""
    async with (
        real_server([interceptor], lambda server: health_pb2_grpc.add_HealthServicer_to_server(Raising(), server)) as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield channel


async def test_interceptor_over_real_grpc() -> None:
    async with raising_server(ErrorMappingInterceptor()) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for index, (_, code, message) in enumerate(CASES):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Check(health_pb2.HealthCheckRequest(service=str(index)), timeout=5)
            assert caught.value.code() == code
            assert message in (caught.value.details() or "")
            assert "secret" not in (caught.value.details() or "")
        ok = await stub.Check(health_pb2.HealthCheckRequest(service="99"), timeout=5)
        assert ok.status == health_pb2.HealthCheckResponse.SERVING  # still serving after every error


async def test_requests_are_capped_and_bad_bytes_are_invalid_argument_before_parsing() -> None:
    async with raising_server(AdmissionInterceptor({"Check": 64})) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(health_pb2.HealthCheckRequest(service="9" * 100), timeout=5)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "Check requests are limited to 64 bytes; this one is 102 bytes" in (
            caught.value.details() or ""
        )
        # Raw bytes on the wire: field 1 (service, a string) holding invalid UTF-8.
        raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=None, response_deserializer=None
        )
        for payload in (b"\x0a\x02\xff\xfe", b"\x0a\x05ab"):  # invalid UTF-8; a truncated message
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw(payload, timeout=5)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not parse" in (caught.value.details() or "")
        ok = await stub.Check(health_pb2.HealthCheckRequest(service="99"), timeout=5)
        assert ok.status == health_pb2.HealthCheckResponse.SERVING


def test_the_search_text_cap_lets_every_request_within_the_field_limits_through() -> None:
    # Before: 16 KiB in all, so a filter of 10,000 ids (or 5,000 labels) was refused before parsing.
    cap = request_caps(GatewaySettings())["SearchText"]
    ids = [f"{n:05d}" + "é" * ((MAX_ID_BYTES - 5) // 2) for n in range(MAX_FILTER_IDS)]
    labels = [f"{n:04d}" + "l" * (MAX_LABEL_BYTES - 4) for n in range(MAX_FILTER_LABELS)]
    largest = pb.SearchTextRequest(
        query="ü" * (MAX_QUERY_BYTES // 2),
        top_k=-(2**31),
        min_score=-1.0,
        filter=pb.Filter(labels=pb.LabelFilter(all_of=labels[:10], any_of=labels[10:4000], none_of=labels[4000:]), ids=ids, uri_prefix="u" * MAX_VALUE_BYTES),
    )
    assert largest.ByteSize() <= cap < 6 * 1024 * 1024  # still a bound: about 5.6 MiB
    assert request_caps(GatewaySettings(max_text_request_kb=32))["SearchText"] == cap + 16 * 1024  # the query limit grows the cap by as much
