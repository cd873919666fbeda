"""``t2i up`` starts every component, prints where each listens, and SIGTERM stops them all."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from core.auth import LocalTokens
from core.index import ImageIndex
from core.manifest import Manifest
from core.records import ModelStamp
from core.settings import split_address
from devstack.milvus import milvus_token
from devstack.process import free_port
from devstack.stack import gateway_serving
from relevance.shapes import read_labels
from t2i.client import GatewayClient
from tests.support.polling import wait_for
from tests.support.ports import unanswered_port
from tests.support.stack import PROJECT_ROOT


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def up_env(gateway: str = "127.0.0.1:0") -> dict[str, str]:
    """``t2i up`` on ports of its own: any free one for the gateway, the page, Triton and Milvus (port 0); it prints those it bound.

    The metrics port is chosen here (``free_port``): the gateway must be told it, and 0 turns it off.
    """
    return {
        **os.environ,
        "T2I_LISTEN": gateway,
        "T2I_WEB_LISTEN": "127.0.0.1:0",
        "T2I_TRITON_URL": "127.0.0.1:0",
        "T2I_MILVUS_URI": "http://127.0.0.1:0",
        "T2I_METRICS_PORT": str(free_port()),
        "T2I_COLLECTION_ALIAS": "t2i_up_test",
    }


class Printed:
    """What a running ``t2i up`` prints, read by a thread of its own (a read that blocks must not hang the test)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def addresses(self, timeout_s: float = 180, ready: str = "") -> dict[str, str]:
        """The address printed for each component once ``t2i up`` is up (``gateway``: host:port; ``triton``: host:port; ``milvus``: a URI)."""
        ready = ready or UP_LINE
        wait_for(lambda: ready in self.text or self.proc.poll() is not None, timeout_s, "t2i up to print where it listens")
        assert ready in self.text, self.text
        found = dict(re.findall(r"^  (gateway|triton|milvus) +(?:grpc://)?(\S+)", self.text, re.MULTILINE))
        assert set(found) == {"gateway", "triton", "milvus"} and all(not address.endswith(":0") for address in found.values()), self.text
        return found

    def rest(self, timeout_s: float = 60) -> str:
        """Everything printed, once ``t2i up`` has exited."""
        self.proc.wait(timeout=timeout_s)
        self.reader.join(timeout=10)
        return self.text


@contextlib.contextmanager
def killed_at_exit(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """``proc``, killed and reaped when the block leaves while it still runs (a failed assertion)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


UP_LINE = "try: t2i reindex PATH"  # printed after the addresses, once every component is ready


def start_up(tiny_repo: Path, data: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "t2i.cli", "up", "--model", "tiny", "--model-repository", str(tiny_repo), "--data-dir", str(data), *extra],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_up_serves_and_sigterm_stops_every_child(tiny_repo: Path, tmp_path: Path) -> None:
    env = up_env()
    data = tmp_path / "updata"
    proc = start_up(tiny_repo, data, env)
    printed = Printed(proc)
    with killed_at_exit(proc):
        addresses = printed.addresses()
        gateway = addresses["gateway"]
        assert gateway_serving(gateway)
        assert processes_mentioning(str(data))  # Milvus, Triton and the gateway run from the data dir
        client = GatewayClient(gateway, token=LocalTokens(data / "stack" / "auth").token("read"))
        info = client.info()
        assert (info.count, info.collection, info.model_id) == (0, "", "random:tiny")
        with pytest.raises(grpc.RpcError) as refused:  # nothing indexed yet: said plainly
            client.search_text("red car", top_k=1)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "t2i reindex" in (refused.value.details() or "")
        client.close()
        # Readiness, GetIndexInfo and the search above wrote nothing: no collection, no alias.
        milvus = ImageIndex(
            addresses["milvus"], "t2i_up_test", ModelStamp.of(Manifest.read(tiny_repo)), timeout_s=10, token=milvus_token(data / "stack" / "milvus")
        )
        assert milvus.active_collection() is None and milvus.orphans() == []
        milvus.close()
        proc.send_signal(signal.SIGTERM)
        output = printed.rest()
    assert proc.returncode == 0, output
    assert f"gateway  grpc://{gateway}" in output and "triton   grpc://127.0.0.1:" in output and "milvus   http://127.0.0.1:" in output
    assert "stopping" in output
    assert processes_mentioning(str(data)) == []  # every child is gone


def test_up_shapes_serves_the_shipped_model_and_the_page_finds_two_red_circles(tmp_path: Path) -> None:
    """``make up`` (``t2i up --shapes``): a newcomer types "two red circles" on the page and sees them."""
    data = tmp_path / "shapes-up"
    env = {**up_env(), "T2I_COLLECTION_ALIAS": "unused"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "t2i.cli", "up", "--shapes", "--data-dir", str(data)],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed = Printed(proc)
    with killed_at_exit(proc):
        printed.addresses(timeout_s=400, ready="t2i search 'two red circles'")
        page = re.search(r"open http://(\S+)/", printed.text)
        assert page is not None and "the shipped shapes model serves" in printed.text and "1200 indexed" in printed.text, printed.text
        with urllib.request.urlopen(f"http://{page.group(1)}/api/search?q=two+red+circles&k=5", timeout=30) as response:
            hits = json.loads(response.read())["hits"]
        labels = {row["file"]: row for row in read_labels(data / "shapes-demo" / "eval" / "labels.csv")}
        shows = [(labels[hit["id"]]["color"], labels[hit["id"]]["shape"], labels[hit["id"]]["count"], labels[hit["id"]]["shape2"]) for hit in hits]
        wanted = ("red", "circle", "2", "")  # the shipped model's top 5 for it is 3 right (README), random weights' about 0.1
        assert len(hits) == 5 and shows[0] == wanted and sum(1 for found in shows if found == wanted) >= 3, shows
        proc.send_signal(signal.SIGTERM)
        output = printed.rest()
    assert proc.returncode == 0, output


def test_a_sigkilled_up_leaves_no_server_and_a_taken_port_is_named(tiny_repo: Path, tmp_path: Path) -> None:
    data = tmp_path / "killed"
    proc = start_up(tiny_repo, data, up_env(), "--no-web")
    with killed_at_exit(proc):
        assert gateway_serving(Printed(proc).addresses()["gateway"])
        children = processes_mentioning(str(data))
        assert len(children) >= 3  # Milvus (and its sandbox), Triton and the gateway
        proc.send_signal(signal.SIGKILL)  # no chance to stop anything itself
        proc.wait(timeout=10)
        wait_for(lambda: processes_mentioning(str(data)) == [], 20, "every server of the killed t2i up to exit")
    # A second stack whose gateway port is taken says by whom, and starts nothing that stays.
    # The squatter binds a port of its own (port 0): the killed gateway's port may already be another
    # process's outgoing port by now (seen in a fresh-clone run beside the session's stack).
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = f"127.0.0.1:{squatter.getsockname()[1]}"
        second = start_up(tiny_repo, tmp_path / "second", up_env(taken), "--no-web")
        output, _ = second.communicate(timeout=180)
    assert second.returncode == 2, output
    assert f"port {split_address(taken)[1]} is taken by pid {os.getpid()}" in output
    assert processes_mentioning(str(tmp_path / "second")) == []


def test_search_without_a_gateway_says_how_to_start_one(capsys: pytest.CaptureFixture[str]) -> None:
    from t2i.cli import main

    with unanswered_port() as port:
        assert main(["search", "red car", "--address", f"127.0.0.1:{port}"]) == 2
    error = capsys.readouterr().err
    assert "cannot reach the gateway" in error and "make up" in error
