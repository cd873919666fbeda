"""The integration tests' local stack: the project root, the gateway's settings, its health, and the CLI against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.listen import PORT_FILE_ENV
from devstack.process import ManagedProcess, free_port, retry_taken_ports
from devstack.stack import LocalStack
from tests.support.polling import wait_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GATEWAY_ENV = {"T2I_MILVUS_TIMEOUT_S": "2", "T2I_TRITON_TIMEOUT_S": "2", "T2I_HEALTH_INTERVAL_S": "0.5", "T2I_MAX_BATCH": "16"}


def health_status(gateway: LocalStack | str, service: str = "", timeout_s: float = 5.0) -> int:
    """The health status of ``service`` ("" for overall) at a stack's gateway or at a gateway's ``host:port``."""
    address = gateway if isinstance(gateway, str) else gateway.gateway_address
    with grpc.insecure_channel(address) as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s).status)


def start_gateway(name: str, env: Mapping[str, str], log_path: Path, metrics: bool = False, timeout_s: float = 60) -> ManagedProcess:
    """``python -m gateway.server`` with ``env``'s settings on ``127.0.0.1:0``, bound; ``process.address`` is the address it reported.

    It is not waited for beyond its bind (SERVING or not is the test's to say). ``metrics``: serve
    them on a port chosen here (``free_port``: the gateway must be told it, 0 turns them off), chosen
    again when the gateway finds it taken (``retry_taken_ports``), in ``process.env``; else none.
    """
    port_file = log_path.with_suffix(".address")

    def start() -> ManagedProcess:
        port_file.unlink(missing_ok=True)
        metrics_port = free_port() if metrics else 0
        settings = {"T2I_LISTEN": "127.0.0.1:0", "T2I_METRICS_PORT": str(metrics_port), PORT_FILE_ENV: str(port_file), "PYTHONUNBUFFERED": "1"}
        process = ManagedProcess(
            name, [sys.executable, "-m", "gateway.server"], log_path, env={**env, **settings}, cwd=PROJECT_ROOT, ports=(metrics_port,), port_wait_s=0
        )
        process.start()
        try:
            process.wait_reported(port_file, timeout_s)
        except BaseException:
            process.stop()
            raise
        return process

    return retry_taken_ports(start, name) if metrics else start()


def metrics_port(process: ManagedProcess) -> int:
    """The metrics port of a gateway that ``start_gateway`` started with ``metrics``."""
    assert process.env is not None
    return int(process.env["T2I_METRICS_PORT"])


def assert_serving(stack: LocalStack) -> None:
    """The gateway process is alive and reports SERVING (waiting briefly for the next check)."""
    assert stack.gateway is not None and stack.gateway.alive()
    wait_for(lambda: health_status(stack) == health_pb2.HealthCheckResponse.SERVING, 10, "SERVING")


def run_t2i(stack: LocalStack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the ``t2i`` CLI against the test stack."""
    env = {**os.environ, **stack.env(), **GATEWAY_ENV, "T2I_TOKEN_FILE": str(stack.tokens.client_file("read"))}
    return subprocess.run([sys.executable, "-m", "t2i.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT)
