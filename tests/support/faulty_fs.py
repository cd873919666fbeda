"""A real local filesystem whose reads fail for chosen files, for the reindex job's fault tests.

``faulty:///path/to/folder`` is the folder itself, through fsspec, except that opening a file named
in the faults file (``T2I_TEST_FAULTS``, one ``KIND NAME`` per line, NAME relative to any root)
goes wrong the way real storage does:

- ``eio NAME``: ``OSError(EIO)``, as a failing disk or a network mount that hiccups;
- ``vanish NAME``: the file is really deleted, then ``FileNotFoundError`` (gone since the listing);
- ``crash NAME``: the decode worker process dies (``os._exit``), as an out-of-memory kill would;
  in the main process it reads normally;
- ``flaky NAME``: ``OSError(EIO)`` at the first open only (counted in ``<faults file>.opened``), as
  a throttled bucket that answers the next attempt.

The file is read at every open, so a test changes the faults between runs, and the spawned decode
workers (which inherit the environment) see the same ones. Listing and ``stat`` always work.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

FAULTS_ENV = "T2I_TEST_FAULTS"


def _faults() -> dict[str, str]:
    path = os.environ.get(FAULTS_ENV)
    if not path or not os.path.exists(path):
        return {}
    found = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            kind, name = line.split(maxsplit=1)
            found[name.strip()] = kind
    return found


def set_faults(path: Path, faults: dict[str, str]) -> None:
    """Write the faults file: ``{name: kind}``."""
    path.write_text("".join(f"{kind} {name}\n" for name, kind in faults.items()))


class FaultyFileSystem(LocalFileSystem):
    """A ``LocalFileSystem`` under the ``faulty`` protocol whose opens fail as the faults file says."""

    protocol = ("faulty",)

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        path = str(path)
        if path.startswith("faulty://"):
            path = path[len("faulty://") :]
        return super()._strip_protocol(path)

    def unstrip_protocol(self, name: str) -> str:
        return f"faulty://{name}"

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        faults = _faults()
        for name, kind in faults.items():
            if not path.endswith("/" + name):
                continue
            if kind == "eio":
                raise OSError(errno.EIO, "Input/output error", path)
            if kind == "vanish":
                if os.path.exists(path):
                    os.remove(path)
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
            if kind == "crash" and multiprocessing.current_process().name != "MainProcess":
                os._exit(17)
            if kind == "flaky":
                opened = Path(os.environ[FAULTS_ENV] + ".opened")
                seen = opened.read_text().splitlines() if opened.exists() else []
                if name not in seen:
                    opened.write_text("\n".join([*seen, name]))
                    raise OSError(errno.EIO, "Input/output error (the first attempt)", path)
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation("faulty", FaultyFileSystem, clobber=True)
