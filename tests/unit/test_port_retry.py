"""Milvus and Triton must be told their ports: a start whose chosen port was taken meanwhile is retried on new ports."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import devstack.process
import devstack.triton
from devstack.milvus import MilvusPorts
from devstack.process import ManagedProcess, PortTaken, ProcessFailed, free_port, retry_taken_ports
from devstack.triton import TritonPorts, start_triton

# A stand-in for tritonserver: binds its three ports as Triton does (failing with Triton's message
# when one is taken) and answers 200 to every GET on its HTTP port.
FAKE_TRITON = """
import http.server, socket, sys
grpc, http_port, metrics = (int(p) for p in sys.argv[1:4])
held = []
for port in (grpc, metrics):
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        print(f"E failed to start GRPC service: Unavailable - Socket '127.0.0.1:{port}' already in use", flush=True)
        sys.exit(1)
    sock.listen()
    held.append(sock)
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", http_port), Ready).serve_forever()
"""


@pytest.fixture()
def squatter() -> Iterator[int]:
    """A port that someone else listens on (this process: the start's own check ignores it, so the fake server meets it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def fake_triton_process(repo: Path, work_dir: Path, ports: TritonPorts, *_: object) -> ManagedProcess:
    argv = [sys.executable, "-c", FAKE_TRITON, str(ports.grpc), str(ports.http), str(ports.metrics)]
    return ManagedProcess("triton", argv, work_dir / "triton.log", ports=(ports.grpc, ports.http, ports.metrics))


def choosing(monkeypatch: pytest.MonkeyPatch, *first: int) -> None:
    """``free_port`` answers ``first`` (in order), then free ports (as when another process took one of them after the choice)."""
    picks = iter(first)
    monkeypatch.setattr(devstack.process, "free_port", lambda: next(picks, None) or free_port())


def test_a_start_whose_port_was_taken_is_retried_on_new_ports(tmp_path: Path, squatter: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first ports chosen have one taken (as when another process took it between ``free_port`` and the bind)."""
    choosing(monkeypatch, free_port(), free_port(), squatter)
    monkeypatch.setattr(devstack.triton, "triton_process", fake_triton_process)
    process, ports = start_triton(tmp_path, tmp_path, timeout_s=30)
    try:
        assert process.alive() and squatter not in (ports.grpc, ports.http, ports.metrics)
        assert ports.chosen == ()  # bound now: a restart on them keeps them
    finally:
        process.stop()


def test_only_the_ports_left_0_are_chosen_again(tmp_path: Path, squatter: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """``t2i up``'s Triton: the gRPC port fixed (``T2I_TRITON_URL``), the HTTP and metrics ports chosen, and the metrics one taken."""
    grpc = free_port()
    choosing(monkeypatch, free_port(), squatter)
    monkeypatch.setattr(devstack.triton, "triton_process", fake_triton_process)
    given = TritonPorts(grpc=grpc)
    assert (given.metrics, given.chosen, given.fixed) == (squatter, ("http", "metrics"), (grpc,))
    process, ports = start_triton(tmp_path, tmp_path, given, timeout_s=30)
    try:
        assert process.alive() and ports.grpc == grpc and squatter not in (ports.http, ports.metrics)
        assert "triton: a port chosen for it was taken before it bound it" in caplog.text
    finally:
        process.stop()


def test_a_taken_fixed_port_is_not_retried(tmp_path: Path, squatter: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Choosing the other ports again cannot help when the one the caller fixed is taken: one start, its error."""
    starts: list[TritonPorts] = []

    def counted(repo: Path, work_dir: Path, ports: TritonPorts, *rest: object) -> ManagedProcess:
        starts.append(ports)
        return fake_triton_process(repo, work_dir, ports, *rest)

    monkeypatch.setattr(devstack.triton, "triton_process", counted)
    given = TritonPorts(grpc=squatter)
    with pytest.raises(ProcessFailed, match=f"Socket '127.0.0.1:{squatter}' already in use"):
        start_triton(tmp_path, tmp_path, given, timeout_s=30)
    assert starts == [given]


def test_milvus_ports_left_0_are_chosen_and_chosen_again_the_given_one_kept() -> None:
    given = MilvusPorts(proxy=19530)
    again = given.again()
    assert given.chosen == again.chosen == ("health", "etcd_client", "etcd_peer") and given.fixed == again.fixed == (19530,)
    assert again.proxy == 19530 and again.health not in (0, given.health)
    kept = again.kept()
    assert kept == again and kept.chosen == () and kept.again() == kept


def test_ports_that_were_given_are_not_changed(tmp_path: Path, squatter: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devstack.triton, "triton_process", fake_triton_process)
    with pytest.raises(ProcessFailed, match=f"Socket '127.0.0.1:{squatter}' already in use"):
        start_triton(tmp_path, tmp_path, TritonPorts(grpc=free_port(), http=free_port(), metrics=squatter), timeout_s=30)


def test_only_a_taken_port_is_retried_and_only_so_often() -> None:
    calls: list[int] = []

    def taken_then_fine() -> str:
        calls.append(1)
        if len(calls) == 1:  # what Triton's log tail says when it exits
            raise ProcessFailed(
                "triton exited (code 1) before ready; log x:\nE failed to start GRPC service: Unavailable - Socket '127.0.0.1:5' already in use"
            )
        return "up"

    assert retry_taken_ports(taken_then_fine, "triton") == "up" and len(calls) == 2

    def broken() -> str:
        calls.append(1)
        raise ProcessFailed("triton exited (code 1) before ready; log x:\nmodel clip_text failed to load")

    calls.clear()
    with pytest.raises(ProcessFailed, match="failed to load"):
        retry_taken_ports(broken, "triton")
    assert len(calls) == 1

    def always_taken() -> str:
        calls.append(1)
        raise PortTaken("cannot start milvus: port 5 is taken by pid 1")

    calls.clear()
    with pytest.raises(PortTaken):
        retry_taken_ports(always_taken, "milvus", attempts=3)
    assert len(calls) == 3


def test_a_failure_that_names_a_fixed_port_is_not_retried() -> None:
    calls: list[int] = []

    def fixed_port_taken() -> str:
        calls.append(1)  # Triton's log names the port it bound before the one it could not bind
        raise ProcessFailed(
            "triton exited (code 1) before ready; log x:\nStarted GRPCInferenceService at 127.0.0.1:8001\n"
            "E failed to start HTTP service: Unavailable - Socket '127.0.0.1:18000' already in use"
        )

    with pytest.raises(ProcessFailed):
        retry_taken_ports(fixed_port_taken, "triton", fixed=(18000,))
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(ProcessFailed):
        retry_taken_ports(fixed_port_taken, "triton", fixed=(8001, 1800))  # bound, or a prefix of the taken one: not named
    assert len(calls) == 3


def test_a_holder_whose_pid_or_command_line_holds_a_fixed_port_number_does_not_stop_the_retry() -> None:
    calls: list[int] = []
    holder = "pid 8001 (python -m http.server --bind 127.0.0.1 8001)"  # the holder of a chosen port, not of the fixed 8001

    def chosen_port_taken() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise PortTaken(f"cannot start triton: port 40000 is taken by {holder}; stop that process or choose another port", 40000)
        if len(calls) == 2:
            raise PortTaken(f"cannot start milvus: port 40001 on 127.0.0.1 is taken by {holder} (Address already in use)")
        return "up"

    assert retry_taken_ports(chosen_port_taken, "triton", fixed=(8001,)) == "up" and len(calls) == 3

    def fixed_port_taken() -> str:
        calls.append(1)
        raise PortTaken(f"cannot start triton: port 8001 is taken by {holder}", 8001)

    calls.clear()
    with pytest.raises(PortTaken):  # the fixed port itself taken: raised at once
        retry_taken_ports(fixed_port_taken, "triton", fixed=(8001,))
    assert len(calls) == 1
