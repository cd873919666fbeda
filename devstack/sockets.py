"""Who listens where: TCP listening sockets from ``/proc/net``, and the processes that hold them (Linux).

The local stack uses it to say which process holds a port it needs, to check that what answers
on a port is the process it just started (not a stale one from an earlier stack), and in tests to
prove that nothing of the stack listens beyond loopback.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"  # TCP state in /proc/net/tcp


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket."""

    host: str
    port: int
    inode: int

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect (127.0.0.0/8 or ::1)."""
        address = ipaddress.ip_address(self.host)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return address.is_loopback


def _address(hex_address: str) -> tuple[str, int]:
    host_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        host = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return host, int(port_hex, 16)


def listeners(net: Path = Path("/proc/net")) -> list[Listener]:
    """Every listening TCP socket of this network namespace (IPv4 and IPv6)."""
    found = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == LISTEN:
                host, port = _address(fields[1])
                found.append(Listener(host, port, int(fields[9])))
    return found


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets that process ``pid`` holds open (empty when it is gone or not ours to read)."""
    inodes = set()
    try:
        for entry in os.scandir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(entry.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = set(), [pid]
    while todo:
        current = todo.pop()
        if current not in tree:
            tree.add(current)
            todo.extend(children.get(current, []))
    return tree


def holders(port: int) -> list[int]:
    """Process ids that hold a socket listening on TCP ``port`` (any address)."""
    inodes = {listener.inode for listener in listeners() if listener.port == port}
    if not inodes:
        return []
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and socket_inodes(int(entry.name)) & inodes:
            pids.append(int(entry.name))
    return sorted(pids)


def describe_pid(pid: int) -> str:
    """``pid 123 (tritonserver --grpc-port=...)`` for messages."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = "?"
    return f"pid {pid} ({command[:120]})"


def tree_listeners(pid: int) -> list[Listener]:
    """The listening sockets that ``pid`` or its descendants hold."""
    inodes: set[int] = set()
    for member in descendants(pid):
        inodes |= socket_inodes(member)
    return [listener for listener in listeners() if listener.inode in inodes]
