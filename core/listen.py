"""Bind, then report: a server of ours binds the port it is given (0 for any free one) and says which it got.

A launcher that picked a free port and passed it on raced every other process of the machine
for it. So the local stack starts the gateway and the page on port 0, and each of them, once
bound, writes its real ``host:port`` to the file named by ``T2I_PORT_FILE`` (when it is set);
``devstack`` waits for that file. The write is atomic: a reader sees the whole address or no file.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.settings import split_address

PORT_FILE_ENV = "T2I_PORT_FILE"


def bound_address(listen: str, port: int) -> str:
    """``listen`` with its port replaced by ``port``, the one the server got (``127.0.0.1:0`` -> ``127.0.0.1:43117``)."""
    host, _ = split_address(listen)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def report_bound(address: str, environ: dict[str, str] | None = None) -> None:
    """Write ``address`` to the file named by ``T2I_PORT_FILE``, if that is set (for the launcher of this process)."""
    target = (os.environ if environ is None else environ).get(PORT_FILE_ENV)
    if not target:
        return
    path = Path(target)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(address + "\n")
    os.replace(partial, path)
