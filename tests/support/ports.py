"""Ports in the states the port tests need."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


def time_wait_port() -> int:
    """A loopback port with a connection in TIME_WAIT and nothing listening: the server side closed first."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = int(server.getsockname()[1])
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the active close: this side goes to TIME_WAIT
        assert client.recv(1) == b""
        client.close()
    return port


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port where nothing answers (connections are refused), held for the block so no other process takes it.

    Bound and never listened on: unlike a free port picked and let go, it cannot become another server's meanwhile.
    """
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])
