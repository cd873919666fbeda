"""The local stack's process supervision: children die with their launcher, taken ports are named, stale servers are caught."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.process import ManagedProcess, ProcessFailed, free_port, wait_for_port
from devstack.sockets import Listener, holders, listeners, tree_listeners
from tests.support.ports import time_wait_port

# Listens on the port given (0: any), then says which: "ok PORT".
HOLD_PORT = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('ok', s.getsockname()[1], flush=True); time.sleep(60)"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too; it waits only for its (dead) parent's reaper.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture()
def stranger() -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Another process holding a listening port (a stale server of an earlier stack)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_PORT, "0"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ok, port = proc.stdout.readline().split()
    assert ok == "ok"
    yield int(port), proc
    proc.kill()
    proc.wait()


def test_children_die_with_a_sigkilled_launcher(tmp_path: Path) -> None:
    launcher = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from devstack.process import ManagedProcess\n"
        f"child = ManagedProcess('sleeper', ['sleep', '300'], Path({str(tmp_path / 'sleep.log')!r})).start()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    assert alive(child)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_gone(child, 10), "the server outlived its SIGKILLed launcher"


def test_a_taken_port_is_named_with_its_process(tmp_path: Path, stranger: tuple[int, subprocess.Popen[str]]) -> None:
    port, proc = stranger
    assert holders(port) == [proc.pid]
    with pytest.raises(ProcessFailed, match=rf"port {port} is taken by pid {proc.pid} \(.*python.*waited 1 s"):
        ManagedProcess("server", ["sleep", "30"], tmp_path / "log", ports=(port,), port_wait_s=1).start()


def test_a_port_still_held_after_the_wait_is_named_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as listener:  # a real listener, held by this process
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="devstack"), pytest.raises(ProcessFailed) as caught:
            wait_for_port(port, "milvus", timeout_s=0.5, interval_s=0.05)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot start milvus: port {port} is taken by pid {os.getpid()} (")
    assert "(waited 0.5 s for it to be released)" in message and "choose another port" in message
    assert [r.getMessage() for r in caplog.records if "waiting up to" in r.getMessage()] != []  # said once that it waits


@pytest.mark.torch  # the launcher needs the milvus wheel (the devstack extra)
def test_the_milvus_launcher_names_the_holder_of_its_port_in_one_line(tmp_path: Path) -> None:
    # Before, the milvus wheel's own port test raised "RuntimeError: set proxy_port=P, but bind failed" with a traceback.
    from devstack.milvus import MilvusPorts, milvus_process

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ProcessFailed, match=rf"^cannot start milvus: port {port} is taken by pid {os.getpid()} \(.*python[^\n]*$"):
            milvus_process(tmp_path / "milvus", MilvusPorts(proxy=port), port_wait_s=0.2)


def test_a_start_waits_for_a_port_that_its_holder_releases(
    tmp_path: Path, stranger: tuple[int, subprocess.Popen[str]], caplog: pytest.LogCaptureFixture
) -> None:
    port, proc = stranger
    assert holders(port) == [proc.pid]
    releasing = threading.Timer(0.5, proc.kill)  # a stack that is stopping lets its port go a moment later
    releasing.start()
    with caplog.at_level(logging.WARNING, logger="devstack"):
        process = ManagedProcess("server", ["sleep", "30"], tmp_path / "log", ports=(port,)).start()
    try:
        releasing.join()
        assert process.alive() and holders(port) == []
        said = [r.getMessage() for r in caplog.records]
        assert any(f"port {port} is still held by pid {proc.pid}" in m for m in said) and any(f"port {port} is free now" in m for m in said)
    finally:
        process.stop()


def test_a_port_in_time_wait_counts_as_free(tmp_path: Path) -> None:
    """Connections of a stopped server linger in TIME_WAIT for a minute; the server binds with SO_REUSEADDR, and so does the check."""
    port = time_wait_port()
    with socket.socket() as plain, pytest.raises(OSError, match="in use"):  # what the milvus wheel's own test did: bind without SO_REUSEADDR
        plain.bind(("127.0.0.1", port))
    wait_for_port(port, "milvus", timeout_s=0)
    from devstack.milvus import _try_bind

    sock = _try_bind(port)
    assert sock is not None
    sock.close()


def test_readiness_refuses_a_port_answered_by_another_process(tmp_path: Path) -> None:
    port = free_port()  # the server is told it, and another process takes it after the start
    process = ManagedProcess("server", ["sleep", "30"], tmp_path / "log", ports=(port,)).start()
    squatter = subprocess.Popen([sys.executable, "-c", HOLD_PORT, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == f"ok {port}"
        with pytest.raises(ProcessFailed, match=rf"port {port} is held by pid {squatter.pid}.*not by the process just started"):
            process.wait_until(lambda: True, 5, "ready")
    finally:
        squatter.kill()
        squatter.wait()
        process.stop()


def test_listeners_of_a_process_tree(stranger: tuple[int, subprocess.Popen[str]]) -> None:
    port, proc = stranger
    assert [(item.host, item.port) for item in tree_listeners(proc.pid)] == [("127.0.0.1", port)]
    assert any(item.port == port for item in listeners())
    assert Listener("127.0.0.1", 1, 0).loopback and Listener("::1", 1, 0).loopback and Listener("::ffff:127.0.0.1", 1, 0).loopback
    assert not Listener("0.0.0.0", 1, 0).loopback and not Listener("::", 1, 0).loopback and not Listener("10.0.0.5", 1, 0).loopback
