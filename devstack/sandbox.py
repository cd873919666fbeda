"""Run a server in a private network namespace, reachable only through sockets the launcher bound on loopback.

The standalone Milvus of the ``milvus`` wheel binds about ten ports on every interface (its
coordinators' gRPC ports cannot be given an address). Inside a network namespace of its own,
with only its own loopback, none of them is reachable from the network or from other processes.
The launcher binds the ports clients need (proxy, health) on the host's 127.0.0.1 before it
starts this program under ``unshare --net``; a socket keeps the namespace it was created in, so
this program accepts on them and forwards each connection to the same port inside the namespace.

    unshare --net python -m devstack.sandbox --listen FD:PORT [--listen FD:PORT ...] -- COMMAND ...

The command dies with this program (``PR_SET_PDEATHSIG``), and this program exits with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import signal
import socket
import struct
import subprocess
import sys

from core.lifetime import die_with_parent, dying_with_parent

logger = logging.getLogger(__name__)

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
CHUNK = 256 * 1024


def loopback_up() -> None:
    """Bring up ``lo`` (a new network namespace starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.close()


def _forwarder(port: int):  # type: ignore[no-untyped-def]
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            client_writer.close()  # not listening yet: the client sees a closed connection and retries
            return
        await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))

    return handle


async def run(listen: list[tuple[int, int]], command: list[str]) -> int:
    """Forward each inherited listening socket to its port inside the namespace while ``command`` runs."""
    # Again here: entering a user namespace (unshare --map-root-user, when not root) clears the setting.
    die_with_parent(signal.SIGKILL)
    loopback_up()
    child = subprocess.Popen(dying_with_parent(command))
    servers = [await asyncio.start_server(_forwarder(port), sock=socket.socket(fileno=fd)) for fd, port in listen]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, child.send_signal, sig)
    code = await loop.run_in_executor(None, child.wait)
    for server in servers:
        server.close()
    return code


def main(argv: list[str] | None = None) -> int:
    """Parse ``--listen FD:PORT ... -- COMMAND`` and run."""
    parser = argparse.ArgumentParser(prog="sandbox", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", action="append", default=[], help="inherited listening socket and the inner port it forwards to (FD:PORT)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    listen = [(int(fd), int(port)) for fd, port in (item.split(":") for item in args.listen)]
    return asyncio.run(run(listen, command))


if __name__ == "__main__":
    sys.exit(main())
