"""'make up' right after a stop: Milvus starts on a port that a stopping server still held, and whose connections are in TIME_WAIT."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from devstack.milvus import MilvusPorts, healthy, start_milvus
from devstack.sockets import descendants, holders
from tests.support.ports import time_wait_port

# A server that is stopping: it still listens (SO_REUSEADDR, as servers bind) until it is killed.
HOLD_REUSING = (
    "import socket, sys, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('ok', flush=True); time.sleep(60)"
)


def test_milvus_starts_once_a_stopping_server_lets_its_proxy_port_go(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Before: "RuntimeError: set proxy_port=P, but bind failed" from the milvus wheel, at once, with a traceback.
    port = time_wait_port()  # the last stack's connections linger for a minute
    stopping = subprocess.Popen([sys.executable, "-c", HOLD_REUSING, str(port)], stdout=subprocess.PIPE, text=True)
    assert stopping.stdout is not None and stopping.stdout.readline().strip() == "ok"
    assert holders(port) == [stopping.pid]
    releasing = threading.Timer(1.0, stopping.kill)
    releasing.start()
    try:
        with caplog.at_level(logging.WARNING, logger="devstack"):
            process, ports = start_milvus(tmp_path / "milvus", MilvusPorts(proxy=port))
    finally:
        releasing.join()
        stopping.wait()
    try:
        assert healthy(ports.health)
        assert process.pid is not None and set(holders(port)) <= descendants(process.pid) and holders(port)
        said = [record.getMessage() for record in caplog.records]
        assert any(f"port {port} is still held by pid {stopping.pid}" in message for message in said), said
    finally:
        process.stop(timeout_s=5)
