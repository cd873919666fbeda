"""Child processes that the local stack owns: start, wait for readiness, stop by process id.

Each server runs in its own session (process group), so stopping it also stops anything it
spawned. Stopping sends SIGTERM, waits, then SIGKILL: Milvus can take over 30 s to stop
gracefully, which a developer or CI should not have to wait for.

A server in its own session gets no signal when its launcher dies, so each one also asks the
kernel to SIGKILL it when the launcher's thread exits (``PR_SET_PDEATHSIG``): a launcher killed
with SIGKILL, or by the OOM killer, leaves no server behind. Before start, the ports a server
will listen on are checked (``wait_for_port``): one still held by a stack that is stopping is
waited for, briefly (``PORT_RELEASE_S``); one held after that is named, with its process, in a
one-line error. Readiness then counts only when the port is held by the process just started (or
its children), never by a stale server of an earlier stack that still answers there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from core.errors import UserError
from core.lifetime import dying_with_parent
from devstack.sockets import descendants, describe_pid, holders, listeners

logger = logging.getLogger(__name__)


class ProcessFailed(UserError):
    """A server of the local stack exited or did not become ready; the message has its log tail."""


@functools.cache
def namespace_prefix(*flags: str) -> tuple[str, ...] | None:
    """The ``unshare`` command that runs a child in new namespaces (``--net``, ``--pid --kill-child``...), or None where that is refused.

    Root gets them directly; anyone else through a user namespace. Refused in some containers: the
    callers then run the child on the host and say what that costs.
    """
    prefix = ("unshare", *flags) if os.geteuid() == 0 else ("unshare", "--user", "--map-root-user", *flags)
    try:
        allowed = subprocess.run([*prefix, "true"], check=False, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        allowed = False
    if not allowed:
        logger.warning("'unshare %s' is refused here", " ".join(flags))
    return prefix if allowed else None


def signal_group(pgid: int | None, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group ``pgid`` (a server started by ``ManagedProcess``); gone is fine."""
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


PORT_RELEASE_S = 15.0  # how long a start waits for a port that a stopping stack still holds (Milvus can take 5 s and more)


def _listening(port: int) -> bool:
    """True when some socket of this network namespace listens on TCP ``port`` (connections in TIME_WAIT do not count)."""
    return any(listener.port == port for listener in listeners())


def wait_for_port(port: int, name: str, timeout_s: float = PORT_RELEASE_S, ignore: Collection[int] = (), interval_s: float = 0.25) -> None:
    """Return once nothing listens on TCP ``port``, waiting up to ``timeout_s`` for a process that is letting it go.

    A stack stopped a moment ago may still hold its ports for a few seconds (Milvus stops slowly):
    the wait says so once, in the log, and ends as soon as the port is free.

    Args:
        port: The port the server ``name`` will listen on.
        name: The server, for the messages.
        timeout_s: How long to wait for the port; 0 checks once.
        ignore: Process ids whose listeners do not count (the launcher's own, inherited sockets).
        interval_s: How often to look again.

    Raises:
        ProcessFailed: the port is still taken after ``timeout_s``; the one-line message names the
            processes that hold it.
    """
    deadline = time.monotonic() + timeout_s
    waited = False
    while True:
        pids = holders(port)
        taken = [pid for pid in pids if pid not in ignore]
        if not taken and (pids or not _listening(port)):
            if waited:
                logger.warning("port %d is free now; starting %s", port, name)
            return
        who = ", ".join(describe_pid(pid) for pid in taken) or "a process this user cannot see"
        if time.monotonic() >= deadline:
            after = f" (waited {timeout_s:g} s for it to be released)" if timeout_s > 0 else ""
            raise PortTaken(
                f"cannot start {name}: port {port} is taken by {who}{after}; stop that process (a stack left from an earlier run?) or choose another port",
                port,
            )
        if not waited:
            logger.warning("port %d is still held by %s (a stack that is stopping?); waiting up to %g s for it", port, who, timeout_s)
            waited = True
        time.sleep(interval_s)


class PortTaken(ProcessFailed):
    """A port a server was to listen on is taken by another process (a new choice of ports may succeed).

    ``port`` is the taken port where the check knows it; the message also names its holders
    (their pids and command lines, which may hold any number).
    """

    def __init__(self, message: str, port: int | None = None):
        super().__init__(message)
        self.port = port


T = TypeVar("T")

# How a server says that a port it was told to bind is taken: Triton ("Socket '127.0.0.1:8001' already in use"),
# Go servers such as Milvus ("bind: address already in use"), Python ("[Errno 98] Address already in use").
BIND_FAILED = re.compile(r"already in use|bind failed", re.IGNORECASE)
PORT_ATTEMPTS = 3


def port_was_taken(exc: ProcessFailed) -> bool:
    """True when ``exc`` is a start that failed because a port was taken (by the check, or in the server's log tail)."""
    return isinstance(exc, PortTaken) or bool(BIND_FAILED.search(str(exc)))


def names_port(exc: ProcessFailed, ports: Collection[int]) -> bool:
    """True when ``exc`` says that one of ``ports`` is taken.

    A ``PortTaken`` that knows its port is judged by it alone. Otherwise only the lines that say a
    port is taken count (a log tail names every port the server did bind before it failed), and in
    them only a port written as an address or a setting (``127.0.0.1:8001``, ``proxy_port=19530``,
    ``port 8001``), never a number of the holders' pids or command lines.
    """
    if isinstance(exc, PortTaken) and exc.port is not None:
        return exc.port in ports
    lines = [line.split(" is taken by ")[0] for line in str(exc).splitlines() if BIND_FAILED.search(line) or " is taken by " in line]
    return any(re.search(rf"(?:[:=]|port ){port}(?!\d)", line) for line in lines for port in ports)


def retry_taken_ports(start: Callable[[], T], name: str, attempts: int = PORT_ATTEMPTS, fixed: Collection[int] = ()) -> T:
    """``start()``, again (up to ``attempts`` times in all) while it fails because a port was taken.

    For servers that must be told their ports (``free_port``): ``start`` chooses them afresh on
    each call, so a port that another process took between the choice and the bind costs one more
    start, not a failed stack. Any other failure, one that names a port of ``fixed`` (given by the
    caller, never chosen again), and the last one, is raised.
    """
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except ProcessFailed as exc:
            if attempt == attempts or not port_was_taken(exc) or names_port(exc, fixed):
                raise
            logger.warning("%s: a port chosen for it was taken before it bound it (%s); starting it again on new ports", name, str(exc).splitlines()[0])
    raise AssertionError("unreachable")  # pragma: no cover


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, and may be taken a moment later.

    Only for servers that must be told their port (Milvus, Triton): their starts retry with new
    ports when one is taken (``retry_taken_ports``). Our own servers bind port 0 and report the port they got
    (``core.listen``, ``ManagedProcess.wait_reported``).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


P = TypeVar("P", bound="ChosenPorts")


class ChosenPorts:
    """The ports of a server that must be told them (Milvus, Triton): a dataclass of ``int`` fields, each 0 for "choose one".

    A port given as 0 is chosen here (``free_port``) and its name kept in ``chosen``; the others
    were fixed by the caller (``t2i up``'s ``T2I_MILVUS_URI``, say). ``start_on_ports`` retries a
    start that met a taken chosen port on ``again()``: new chosen ports, the same fixed ones.
    """

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # set by @dataclass on each subclass

    def __post_init__(self) -> None:
        self.chosen = tuple(f.name for f in dataclasses.fields(self) if getattr(self, f.name) == 0)
        for name in self.chosen:
            setattr(self, name, free_port())

    def numbers(self) -> dict[str, int]:
        """Every port by its name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def fixed(self) -> tuple[int, ...]:
        """The ports given by the caller, which a retry never changes."""
        return tuple(port for name, port in self.numbers().items() if name not in self.chosen)

    @property
    def chosen_numbers(self) -> frozenset[int]:
        """The ports chosen here, which a start never waits for (``ManagedProcess.chosen_ports``)."""
        return frozenset(getattr(self, name) for name in self.chosen)

    def again(self: P) -> P:
        """The same fixed ports, and new chosen ones."""
        return dataclasses.replace(self, **dict.fromkeys(self.chosen, 0))

    def kept(self: P) -> P:
        """These ports, all fixed now (a server bound them): a restart on them must not choose others."""
        return dataclasses.replace(self)


def start_on_ports(start: Callable[[P], T], ports: P, name: str) -> T:
    """``start(ports)``; while it fails on a taken chosen port, ``start(ports.again())`` (``retry_taken_ports``).

    With no chosen port, one start: ports given by the caller are never changed.
    """
    if not ports.chosen:
        return start(ports)
    attempts = iter([ports])
    return retry_taken_ports(lambda: start(next(attempts, None) or ports.again()), name, fixed=ports.fixed)


class ManagedProcess:
    """One server process with its log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        ports: tuple[int, ...] = (),
        inherit: list[socket.socket] | None = None,
        port_wait_s: float = PORT_RELEASE_S,
        chosen_ports: Collection[int] = (),
    ):
        """Describe the process; nothing starts until ``start``.

        Args:
            ports: TCP ports it will listen on: they must be free at start, and held by it when it is ready
                (0, for a port it chooses itself, is left out; ``wait_reported`` adds the one it got).
            inherit: Listening sockets bound by the launcher that the child inherits; this process closes its copies at start.
            port_wait_s: How long ``start`` waits for a port that another process still holds (``wait_for_port``).
            chosen_ports: Those of ``ports`` chosen a moment ago (``ChosenPorts``): one taken now is not being
                released by a stopping stack, so it is never waited for (the start fails at once, and is retried on new ports).
        """
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.ports = tuple(port for port in ports if port)
        self.inherit = inherit or []
        self.port_wait_s = port_wait_s
        self.chosen_ports = frozenset(chosen_ports)
        self.proc: subprocess.Popen[bytes] | None = None
        self.address: str | None = None  # the host:port it reported (wait_reported)

    @property
    def pid(self) -> int | None:
        """Process id, or None before start."""
        return self.proc.pid if self.proc else None

    def start(self) -> ManagedProcess:
        """Start the process in a new session with stdout and stderr to the log file; it dies with this thread.

        Raises:
            ProcessFailed: one of its ports is still taken by another process after ``port_wait_s`` (named in the message).
        """
        for port in self.ports if not self.inherit else ():
            wait_for_port(port, self.name, 0 if port in self.chosen_ports else self.port_wait_s, ignore=(os.getpid(),))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                dying_with_parent(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                pass_fds=[sock.fileno() for sock in self.inherit],
            )
        for sock in self.inherit:
            sock.close()
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
                    self._check_owner(what)
                    return
            except ProcessFailed:
                raise
            except Exception:  # noqa: BLE001 - not ready yet
                pass
            time.sleep(0.25)
        raise ProcessFailed(f"{self.name} not {what} after {timeout_s:.0f} s; log {self.log_path}:\n{self.log_tail()}")

    def wait_reported(self, port_file: Path, timeout_s: float) -> str:
        """The ``host:port`` that the process writes to ``port_file`` once bound (``core.listen.report_bound``).

        The port joins ``ports``: it must be held by this process, here and in later readiness
        checks. ``port_file`` must not exist before ``start`` (remove it first).

        Raises:
            ProcessFailed: the process exited, or reported nothing within ``timeout_s``; the message has its log tail.
        """

        def reported() -> bool:
            address = port_file.read_text().strip()  # FileNotFoundError until the process is bound
            port = int(address.rpartition(":")[2])
            self.address, self.ports = address, (*self.ports, port) if port not in self.ports else self.ports
            return True

        self.wait_until(reported, timeout_s, f"bound (its address in {port_file})")
        assert self.address is not None
        return self.address

    def _check_owner(self, what: str) -> None:
        """Raise unless every port in ``ports`` is held by this process or its children."""
        assert self.proc is not None
        tree = descendants(self.proc.pid)
        for port in self.ports:
            others = [pid for pid in holders(port) if pid not in tree and pid != os.getpid()]
            if others:
                raise ProcessFailed(
                    f"{self.name} looked {what}, but port {port} is held by {', '.join(describe_pid(pid) for pid in others)}, "
                    "not by the process just started: stop the stale server and start again"
                )

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it after ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid
        signal_group(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.info("%s did not stop within %.0f s; killing pid %d", self.name, timeout_s, pgid)
            signal_group(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        signal_group(pgid, signal.SIGKILL)  # stray children of the group, if any
        logger.info("stopped %s (pid %d)", self.name, pgid)
