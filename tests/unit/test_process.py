"""The local stack's process supervision: children die with their launcher, taken ports are named, stale servers are caught."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.process import ManagedProcess, ProcessFailed, free_port
from devstack.sockets import Listener, holders, listeners, tree_listeners

HOLD_PORT = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('ok', flush=True); time.sleep(60)"


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
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", HOLD_PORT, str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ok"
    yield port, proc
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
    with pytest.raises(ProcessFailed, match=rf"port {port} is taken by pid {proc.pid} \(.*python"):
        ManagedProcess("server", ["sleep", "30"], tmp_path / "log", ports=(port,)).start()


def test_readiness_refuses_a_port_answered_by_another_process(tmp_path: Path) -> None:
    port = free_port()
    process = ManagedProcess("server", ["sleep", "30"], tmp_path / "log", ports=(port,)).start()
    squatter = subprocess.Popen([sys.executable, "-c", HOLD_PORT, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "ok"
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
