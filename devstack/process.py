"""Child processes that the local stack owns: start, wait for readiness, stop by process id.

Each server runs in its own session (process group), so stopping it also stops anything it
spawned. Stopping sends SIGTERM, waits, then SIGKILL: Milvus can take over 30 s to stop
gracefully, which a developer or CI should not have to wait for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from core.errors import UserError

logger = logging.getLogger(__name__)


class ProcessFailed(UserError):
    """A server of the local stack exited or did not become ready; the message has its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ManagedProcess:
    """One server process with its log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
        """Describe the process; nothing starts until ``start``."""
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id, or None before start."""
        return self.proc.pid if self.proc else None

    def start(self) -> ManagedProcess:
        """Start the process in a new session with stdout and stderr to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        logger.info("started %s (pid %d), log %s", self.name, self.proc.pid, self.log_path)
        return self

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``ready`` until it is true.

        Raises:
            ProcessFailed: the process exited, or ``timeout_s`` passed; the message has the log tail.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise ProcessFailed(
                    f"{self.name} exited (code {self.proc.returncode if self.proc else '?'}) before {what}; log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not ready yet
                pass
            time.sleep(0.25)
        raise ProcessFailed(f"{self.name} not {what} after {timeout_s:.0f} s; log {self.log_path}:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it after ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid
        self._signal(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.info("%s did not stop within %.0f s; killing pid %d", self.name, timeout_s, pgid)
            self._signal(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._signal(pgid, signal.SIGKILL)  # stray children of the group, if any
        logger.info("stopped %s (pid %d)", self.name, pgid)

    @staticmethod
    def _signal(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
