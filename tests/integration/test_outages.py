"""Triton or Milvus down: UNAVAILABLE within the deadline, NOT_SERVING, and recovery without a
gateway restart once they are back. These tests stop and restart servers, so they get a stack of
their own (module scope) and never disturb the session's shared one, whatever the order."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from devstack.milvus import start_milvus
from devstack.stack import LocalStack
from devstack.triton import start_triton
from export.samples import sample_photos
from t2i.client import GatewayClient
from tests.support.polling import wait_for
from tests.support.stack import GATEWAY_ENV, assert_serving, health_status
from text2image.v1 import text2image_pb2 as pb

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def stack(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack for this module alone, with one indexed photo, so every search has a hit."""
    local = LocalStack(tiny_repo, tmp_path_factory.mktemp("outages"), gateway_address="127.0.0.1:0", alias="t2i_outages", extra_env=GATEWAY_ENV)
    local.start()
    try:
        with GatewayClient(local.gateway_address, timeout_s=30, token=local.token("write")) as client:
            photo = sample_photos(1)[0]
            reply = client.index.UpsertImages(pb.UpsertImagesRequest(items=[pb.ImageItem(id="probe", content=photo.read_bytes(), uri=str(photo))]), timeout=60)
            assert reply.upserted == 1
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Iterator[GatewayClient]:
    with GatewayClient(stack.gateway_address, timeout_s=20, token=stack.token("write")) as gateway:
        yield gateway


def fresh_query() -> str:
    """A query the gateway has never embedded, so its cache cannot answer without Triton."""
    return f"red car number {uuid.uuid4().hex}"


def expect_unavailable(client: GatewayClient, what: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.search.SearchText(pb.SearchTextRequest(query=fresh_query(), top_k=3), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    assert what in (caught.value.details() or "")


def recovered(client: GatewayClient) -> bool:
    """A fresh query (so Triton must encode it) finds the indexed photo again."""
    return [hit.id for hit in client.search_text(fresh_query(), top_k=3).hits] == ["probe"]


def test_triton_down_and_back(stack: LocalStack, client: GatewayClient) -> None:
    gateway_pid = stack.gateway.pid if stack.gateway else None
    assert stack.triton is not None and stack.triton_ports is not None
    stack.triton.stop()
    try:
        expect_unavailable(client, "Triton")
        wait_for(lambda: health_status(stack) == NOT_SERVING, 10, "NOT_SERVING while Triton is down")
        assert health_status(stack, "liveness") == health_pb2.HealthCheckResponse.SERVING
    finally:
        stack.triton, _ = start_triton(stack.repo, stack.data_dir / "triton", stack.triton_ports)
    wait_for(lambda: recovered(client), 30, "search to work again")
    assert_serving(stack)
    assert stack.gateway is not None and stack.gateway.pid == gateway_pid  # no gateway restart


def test_milvus_hung_and_back(stack: LocalStack, client: GatewayClient) -> None:
    assert stack.milvus is not None and stack.milvus.pid is not None
    os.killpg(stack.milvus.pid, signal.SIGSTOP)
    try:
        expect_unavailable(client, "Milvus")
        wait_for(lambda: health_status(stack) == NOT_SERVING, 15, "NOT_SERVING while Milvus hangs")
    finally:
        os.killpg(stack.milvus.pid, signal.SIGCONT)
    wait_for(lambda: recovered(client), 30, "search to work again")
    assert_serving(stack)


def test_milvus_killed_and_restarted(stack: LocalStack, client: GatewayClient) -> None:
    assert stack.milvus is not None and stack.milvus_ports is not None
    count = client.info().count
    stack.milvus.stop(timeout_s=5)
    expect_unavailable(client, "Milvus")
    stack.milvus, _ = start_milvus(stack.data_dir / "milvus", stack.milvus_ports)
    wait_for(lambda: recovered(client), 90, "search to work again after a Milvus restart")
    assert_serving(stack)
    wait_for(lambda: client.info().count == count, 60, "the same row count after the restart")  # nothing lost
