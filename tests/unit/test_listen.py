"""Bind, then report: the gateway and the page on port 0 bind a real port, log it, and tell their launcher (``core.listen``)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from core.listen import PORT_FILE_ENV, bound_address, report_bound
from devstack.milvus import MilvusPorts
from devstack.process import ManagedProcess, free_port
from devstack.stack import LocalStack, http_ok, start_web
from devstack.triton import TritonPorts
from tests.support.models import export_beside
from tests.support.polling import wait_for
from tests.support.stack import health_status, start_gateway


def log_messages(log: Path) -> list[str]:
    return [json.loads(line)["msg"] for line in log.read_text().splitlines() if line.startswith("{")]


def test_bound_address_keeps_the_host_and_takes_the_real_port(tmp_path: Path) -> None:
    assert bound_address("127.0.0.1:0", 43117) == "127.0.0.1:43117"
    assert bound_address("[::1]:0", 5) == "[::1]:5"
    report_bound("127.0.0.1:43117", {})  # no T2I_PORT_FILE: nothing is written
    target = tmp_path / "port"
    report_bound("127.0.0.1:43117", {PORT_FILE_ENV: str(target)})
    assert target.read_text() == "127.0.0.1:43117\n" and os.listdir(tmp_path) == ["port"]


def test_the_gateway_on_port_0_reports_a_real_connectable_port_and_rescans_its_models(tmp_path: Path, model_repo: Path) -> None:
    """``python -m gateway.server`` with ``T2I_LISTEN=127.0.0.1:0``, launched as the local stack launches it.

    Triton and Milvus are not there: the gateway still binds and answers its health check (NOT_SERVING).
    Its catalog rescans the repository in the background (``serve`` starts the engine): a version
    exported after the start is announced in the log, with no request asking.
    """
    repo = tmp_path / "repo"
    shutil.copytree(model_repo, repo)
    log = tmp_path / "gateway.log"
    env = {
        **os.environ,
        "T2I_AUTH": "open",
        "T2I_MODEL_REPOSITORY": str(repo),
        "T2I_TRITON_URL": "127.0.0.1:9",  # the discard port: nothing answers
        "T2I_MILVUS_URI": "http://127.0.0.1:9",
        "T2I_OTLP_ENDPOINT": "",
    }
    gateway = start_gateway("gateway", env, log)
    try:
        address = gateway.address
        assert address is not None
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0 and gateway.ports == (int(port),)
        assert health_status(address, timeout_s=10) in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert any(message.startswith(f"gateway listening on {address} (plaintext, open;") for message in log_messages(log)), log.read_text()
        export_beside(repo, "unit:model-v2", "d" * 64)
        wait_for(lambda: "model version 2: unit:model-v2" in log_messages(log), 30, "the gateway to announce model version 2")
    finally:
        gateway.stop()


def test_the_page_on_port_0_reports_a_real_port_that_start_web_reads_back(tmp_path: Path) -> None:
    process = start_web("127.0.0.1:0", "127.0.0.1:9", str(tmp_path), tmp_path / "web.log")
    try:
        assert process.address is not None
        host, port = process.address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        assert http_ok(f"http://{process.address}/healthz")
        assert f"search page listening on http://{process.address}/ (gateway 127.0.0.1:9)" in log_messages(tmp_path / "web.log")
    finally:
        process.stop()


def test_a_launcher_names_the_port_file_when_nothing_is_reported(tmp_path: Path) -> None:
    silent = ManagedProcess("silent", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "log").start()
    try:
        with pytest.raises(Exception, match=r"silent not bound \(its address in .*never\) after 1 s"):
            silent.wait_reported(tmp_path / "never", 1)
    finally:
        silent.stop()


def backendless_stack(tmp_path: Path, model_repo: Path, monkeypatch: pytest.MonkeyPatch, **fields: Any) -> LocalStack:
    """A LocalStack whose Triton and Milvus are not there: SERVING is not to be had, so any health answer counts as up."""
    monkeypatch.setattr("devstack.stack.gateway_serving", lambda address: health_status(address) >= 0)
    stack = LocalStack(model_repo, tmp_path, gateway_address="127.0.0.1:0", extra_env={"T2I_AUTH": "open", "T2I_OTLP_ENDPOINT": ""}, **fields)
    stack.milvus_ports, stack.triton_ports = MilvusPorts(proxy=9), TritonPorts(grpc=9, http=9, metrics=9)
    stack.tokens.ensure()
    (tmp_path / "milvus").mkdir()
    (tmp_path / "milvus" / "root.token").write_text("root:unused\n")
    return stack


def test_local_stack_on_port_0_learns_the_gateway_address_and_prints_it(tmp_path: Path, model_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``LocalStack.start_gateway`` (``t2i up`` with ``T2I_LISTEN=127.0.0.1:0``): the address it prints is the one bound."""
    stack = backendless_stack(tmp_path, model_repo, monkeypatch, metrics_port=0)
    try:
        stack.start_gateway()
        host, port = stack.gateway_address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        assert health_status(stack.gateway_address, timeout_s=10) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert f"gateway  grpc://{stack.gateway_address}  " in stack.describe()
    finally:
        stack.stop()


def test_a_chosen_metrics_port_that_is_taken_is_chosen_again(tmp_path: Path, model_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics port cannot be 0 (that disables it): the stack chooses one, and chooses again when the gateway finds it taken."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = int(squatter.getsockname()[1])
        choices = iter([taken])
        monkeypatch.setattr("devstack.stack.free_port", lambda: next(choices, None) or free_port())
        stack = backendless_stack(tmp_path, model_repo, monkeypatch)
        assert stack.metrics_port == taken
        try:
            stack.start_gateway()
            assert stack.metrics_port != taken and http_ok(f"http://127.0.0.1:{stack.metrics_port}/metrics")
            assert "Address already in use" in (tmp_path / "gateway.log").read_text()  # the first start met the taken port
        finally:
            stack.stop()
