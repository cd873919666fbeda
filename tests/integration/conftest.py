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
def head_archive() -> bytes:
    """``git archive HEAD``: what a clean clone holds (no stubs, no egg-info, nothing untracked)."""
    return subprocess.run(["git", "-C", str(PROJECT_ROOT), "archive", "--format=tar", "HEAD"], capture_output=True, check=True).stdout


@pytest.fixture(scope="session")
def head_wheel(head_archive: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's wheel of HEAD, built from a clean copy (``git archive``) with the client's beside it, once per session.

    Built with build isolation, as ``pip install ./client .`` builds them from a clone: the client's
    build backend (client/setup.py) must make the protobuf stubs itself. ``test_base_install`` installs
    both, ``test_client_package`` the client's alone.
    """
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    subprocess.run(["tar", "-x", "-C", str(source)], input=head_archive, check=True)
    assert not list((source / "protos").rglob("*_pb2*.py")), "the clean copy holds no generated stubs"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(work / "dist"), str(source / "client"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"wheels built from a clean copy in {time.monotonic() - started:.0f} s")
    (built,) = (work / "dist").glob("text2image_search-*.whl")
    return built


@pytest.fixture(scope="session")
def shapes_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped shapes model (``relevance/models/shapes``) rebuilt as a ``CLIPModel`` folder, once per session."""
    from relevance import shipped

    return shipped.materialize(tmp_path_factory.mktemp("shapes") / "model")


@pytest.fixture(scope="session")
def shapes_repo(shapes_model: Path) -> Path:
    """The shipped shapes model exported (fp32) once per session, for every module that serves it."""
    from t2i.shapes_demo import ensure_export

    repo = shapes_model.parent / "repo"
    ensure_export(str(shapes_model), repo)
    return repo


@pytest.fixture(scope="session")
def shapes_stack(stack: LocalStack, shapes_repo: Path) -> Iterator[LocalStack]:
    """A Triton serving the shipped shapes model (fp32) beside the session's Milvus, with no gateway.

    Each module that searches it starts a gateway of its own on an alias of its own with
    ``tests.support.shared_stack.on_stack(shapes_stack, ...)``, so their rows never meet.
    """
    from tests.support.shared_stack import on_stack

    with on_stack(stack, "t2i_shapes", shapes_repo.parent / "stack", repo=shapes_repo, own_triton=True, gateway=False) as local:
        yield local


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
