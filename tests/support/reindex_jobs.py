"""Reindex jobs the integration tests run and check: one killed after some batches, and the rows a folder must give."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from core.errors import InvalidArgument
from core.records import item_hash
from reindex.sources import Source
from tests.support.polling import wait_for
from tests.support.stack import PROJECT_ROOT

KILLED_AFTER_BATCHES = """
import asyncio, os, signal, sys
from core.settings import Settings
from reindex.main import reindex
from reindex.sources import Shard

def die(report):
    if report.indexed >= int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

run_id = sys.argv[sys.argv.index("--run-id") + 1] if "--run-id" in sys.argv else None
shard = Shard.from_env(int(sys.argv[sys.argv.index("--shards") + 1])) if "--shards" in sys.argv else Shard()
asyncio.run(reindex(Settings(), sys.argv[1], full=False, batch_size=4, workers=1, progress=False, on_batch=die, shard=shard, run_id=run_id))
"""


def run_killed_job(args: list[str], env: dict[str, str], log: Path) -> None:
    """Run ``KILLED_AFTER_BATCHES`` with ``args`` and check that it died by SIGKILL."""
    with log.open("wb") as out:  # a file, not a pipe: the job's decode worker holds its stderr open
        proc = subprocess.Popen([sys.executable, "-c", KILLED_AFTER_BATCHES, *args], env=env, cwd=PROJECT_ROOT, stdout=out, stderr=out, start_new_session=True)
        try:
            proc.wait(timeout=300)
            # Its decode workers die with it (PR_SET_PDEATHSIG), not left running with no owner.
            wait_for(lambda: not session_members(proc.pid), 10, "the killed job's decode workers to exit")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever outlived the job, if the check above failed
    assert proc.returncode == -signal.SIGKILL, log.read_text(errors="replace")[-2000:]


def session_members(sid: int) -> list[int]:
    """Live processes of the session ``sid`` (the job ran in its own session)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid and fields[0] != "Z":  # field 6 of stat: the session id
                    members.append(int(entry.name))
    return members


def expected_rows(folder: Path) -> dict[str, str]:
    """What the index must hold for ``folder``: every decodable image, by id and hash."""
    from inference.images import DecoderFailure, decode_image

    rows = {}
    source = Source(str(folder))
    for image in source.list():
        data = source.read(image, 1 << 30)
        try:
            decode_image(data)
        except DecoderFailure:
            raise  # a decoder bug would shrink the expected rows and the stored ones alike: fail instead
        except InvalidArgument:
            continue  # rejected files are not indexed
        rows[image.id] = item_hash(data, image.uri, image.labels, image.modified_time)  # a collection of the current schema
    return rows
