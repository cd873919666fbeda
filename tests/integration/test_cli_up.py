"""``t2i up`` starts every component, prints where each listens, and SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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
from t2i.client import GatewayClient
from tests.support.polling import wait_for
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


def up_env(gateway: str) -> dict[str, str]:
    return {
        **os.environ,
        "T2I_LISTEN": gateway,
        "T2I_TRITON_URL": f"127.0.0.1:{free_port()}",
        "T2I_MILVUS_URI": f"http://127.0.0.1:{free_port()}",
        "T2I_METRICS_PORT": str(free_port()),
        "T2I_COLLECTION_ALIAS": "t2i_up_test",
    }


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
    gateway = f"127.0.0.1:{free_port()}"
    env = up_env(gateway)
    data = tmp_path / "updata"
    proc = start_up(tiny_repo, data, env)
    try:
        wait_for(lambda: gateway_serving(gateway), 120, "t2i up to serve")
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
            env["T2I_MILVUS_URI"], "t2i_up_test", ModelStamp.of(Manifest.read(tiny_repo)), timeout_s=10, token=milvus_token(data / "stack" / "milvus")
        )
        assert milvus.active_collection() is None and milvus.orphans() == []
        milvus.close()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert f"gateway  grpc://{gateway}" in output and "triton   grpc://" in output and "milvus   http://127.0.0.1:" in output
    assert "stopping" in output
    assert processes_mentioning(str(data)) == []  # every child is gone


def test_a_sigkilled_up_leaves_no_server_and_a_taken_port_is_named(tiny_repo: Path, tmp_path: Path) -> None:
    gateway = f"127.0.0.1:{free_port()}"
    env = up_env(gateway)
    data = tmp_path / "killed"
    proc = start_up(tiny_repo, data, env, "--no-web")
    try:
        wait_for(lambda: gateway_serving(gateway), 120, "t2i up to serve")
        children = processes_mentioning(str(data))
        assert len(children) >= 3  # Milvus (and its sandbox), Triton and the gateway
        proc.send_signal(signal.SIGKILL)  # no chance to stop anything itself
        proc.wait(timeout=10)
        wait_for(lambda: processes_mentioning(str(data)) == [], 20, "every server of the killed t2i up to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
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

    assert main(["search", "red car", "--address", f"127.0.0.1:{free_port()}"]) == 2
    error = capsys.readouterr().err
    assert "cannot reach the gateway" in error and "make up" in error
