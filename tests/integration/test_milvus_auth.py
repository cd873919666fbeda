"""A wrong Milvus password is not an outage: refused at once, never retried, with where the credentials came from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from core.index import index_from_settings
from core.manifest import Manifest
from core.milvus_errors import CredentialsRefused
from core.records import ModelStamp
from core.settings import Settings
from devstack.stack import LocalStack
from export.samples import sample_photos
from t2i.client import GatewayClient
from tests.support.stack import GATEWAY_ENV, PROJECT_ROOT, health_status, start_gateway


class Retried(AssertionError):
    pass


def test_refused_credentials_fail_at_once_and_say_where_they_came_from(stack: LocalStack, tmp_path: Path) -> None:
    # Before: "Fail connecting to server ... illegal connection params or server unavailable", retried
    # as an outage for the whole T2I_MILVUS_RETRY_S (120 s).
    other = tmp_path / "other-stack-root.token"
    other.write_text("root:the-password-of-another-stack\n")
    stamp = ModelStamp.of(Manifest.read(stack.repo))
    for settings, source in (
        (Settings(milvus_uri=stack.milvus_uri, milvus_token_file=other, collection_alias=stack.alias), f"from T2I_MILVUS_TOKEN_FILE ({other})"),
        (Settings(milvus_uri=stack.milvus_uri, data_dir=tmp_path, collection_alias=stack.alias), "no credentials were given"),
    ):
        index = index_from_settings(settings, stamp, retry_budget_s=120)
        waits: list[float] = []

        def sleep(seconds: float, waits: list[float] = waits) -> None:
            waits.append(seconds)
            if len(waits) >= 3:
                raise Retried(f"retried {len(waits)} times")

        index.sleep = sleep
        with pytest.raises(CredentialsRefused) as caught:
            index.active()
        assert waits == []  # one attempt: no backoff at all
        message = str(caught.value)
        assert message.startswith(f"Milvus at {stack.milvus_uri} refused the credentials (connect: ") and source in message, message
        assert "the-password" not in message
        index.close()


def test_the_reindex_command_says_the_credentials_were_refused(stack: LocalStack, tmp_path: Path) -> None:
    other = tmp_path / "root.token"
    other.write_text("root:the-password-of-another-stack\n")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "one.jpg").write_bytes(sample_photos(1)[0].read_bytes())
    env = {**os.environ, **stack.env(), **GATEWAY_ENV, "T2I_MILVUS_TOKEN_FILE": str(other), "T2I_MILVUS_RETRY_S": "120"}
    result = subprocess.run([sys.executable, "-m", "t2i.cli", "reindex", str(photos)], env=env, capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "refused the credentials" in error[0] and f"T2I_MILVUS_TOKEN_FILE ({other})" in error[0], result.stderr[-2000:]
    assert "retrying in" not in result.stderr and "Traceback" not in result.stderr  # the log line of a retry


def test_a_gateway_with_refused_credentials_says_so_and_is_not_ready(stack: LocalStack, tmp_path: Path) -> None:
    other = tmp_path / "root.token"
    other.write_text("root:the-password-of-another-stack\n")
    env = {**os.environ, **stack.env(), **GATEWAY_ENV, "T2I_MILVUS_TOKEN_FILE": str(other)}
    gateway = start_gateway("gateway", env, tmp_path / "gateway.log")
    try:
        address = gateway.address
        assert address is not None
        log = tmp_path / "gateway.log"
        # Readiness says why it is not ready (it logs the refusal) and answers NOT_SERVING.
        gateway.wait_until(
            lambda: "refused the credentials" in log.read_text() and health_status(address) == health_pb2.HealthCheckResponse.NOT_SERVING, 60, "not ready"
        )
        with GatewayClient(address, timeout_s=20, token=stack.token("read")) as client, pytest.raises(grpc.RpcError) as caught:
            client.search_text("red car", top_k=3)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
        assert "refused the credentials" in (caught.value.details() or "") and f"T2I_MILVUS_TOKEN_FILE ({other})" in (caught.value.details() or "")
    finally:
        gateway.stop()
