"""Real servers for the integration tests: Milvus, Triton and the gateway, once per session.

A tiny random CLIP (real tokenizer, real preprocessing, real ONNX through Triton's python
backend) is exported first. Servers bind free loopback ports and are stopped by process id.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.index import ImageIndex
from core.manifest import Manifest
from core.records import ModelStamp
from devstack.stack import LocalStack
from export.main import run_export
from t2i.client import GatewayClient
from tests.support.stack import GATEWAY_ENV, PROJECT_ROOT

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration is marked ``integration`` (``pytest -m "not integration"`` runs the unit tests)."""
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model_repository")
    run_export("tiny", out)
    return out


@pytest.fixture(scope="session")
def stack(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The session's shared stack, with an empty collection behind its alias (as a first upsert leaves it).

    Reads never create one; ``test_cli_up`` covers a stack with nothing indexed.
    """
    local = LocalStack(tiny_repo, tmp_path_factory.mktemp("stack"), gateway_address="127.0.0.1:0", alias="t2i_test", extra_env=GATEWAY_ENV)
    local.start()
    try:
        writer = ImageIndex(local.milvus_uri, local.alias, ModelStamp.of(Manifest.read(tiny_repo)), timeout_s=30, token=local.milvus_token)
        writer.ensure_active()
        writer.close()
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def client(stack: LocalStack) -> Iterator[GatewayClient]:
    gateway = GatewayClient(stack.gateway_address, timeout_s=20, token=stack.token("write"))
    yield gateway
    gateway.close()


@pytest.fixture(scope="session")
def index(stack: LocalStack, tiny_repo: Path) -> Iterator[ImageIndex]:
    """Direct Milvus access to the alias the gateway serves, for checking what is stored."""
    manifest = Manifest.read(tiny_repo)
    direct = ImageIndex(stack.milvus_uri, stack.alias, ModelStamp.of(manifest), timeout_s=10, token=stack.milvus_token)
    yield direct
    direct.close()


@pytest.fixture(scope="session")
def container_images() -> dict[str, str]:
    """Every image of ``docker/``, built once per session by the script ``make images`` runs (cached layers); name → tag.

    ``make test`` installs podman and mmdebstrap first (``make containers``).
    """
    if shutil.which("podman") is None or shutil.which("mmdebstrap") is None:
        pytest.fail("podman and mmdebstrap are missing: 'make containers' installs them (make test does)")
    build = PROJECT_ROOT / "docker" / "build.py"
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(PROJECT_ROOT / "docker" / "containers.conf"))}
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(build)], capture_output=True, text=True, timeout=2400, env=env, cwd=PROJECT_ROOT)
    assert result.returncode == 0, f"docker/build.py failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    print(f"images built in {time.monotonic() - started:.0f} s")
    listing = subprocess.run([sys.executable, str(build), "--print-tags"], capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in listing.splitlines())
