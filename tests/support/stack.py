"""The integration tests' local stack: the project root, the gateway's settings, its health, and the CLI against it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.stack import LocalStack
from tests.support.polling import wait_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GATEWAY_ENV = {"T2I_MILVUS_TIMEOUT_S": "2", "T2I_TRITON_TIMEOUT_S": "2", "T2I_HEALTH_INTERVAL_S": "0.5", "T2I_MAX_BATCH": "16"}


def health_status(stack: LocalStack, service: str = "") -> int:
    with grpc.insecure_channel(stack.gateway_address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def assert_serving(stack: LocalStack) -> None:
    """The gateway process is alive and reports SERVING (waiting briefly for the next check)."""
    assert stack.gateway is not None and stack.gateway.alive()
    wait_for(lambda: health_status(stack) == health_pb2.HealthCheckResponse.SERVING, 10, "SERVING")


def run_t2i(stack: LocalStack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the ``t2i`` CLI against the test stack."""
    env = {**os.environ, **stack.env(), **GATEWAY_ENV, "T2I_TOKEN_FILE": str(stack.tokens.client_file("read"))}
    return subprocess.run([sys.executable, "-m", "t2i.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT)
