"""The production images, built and run here with podman (``make images``; no Docker engine, no registry).

The session builds both images once (``docker/build.py``: cached layers make a rebuild after a code
change take about 20 s each). The runtime image then runs as the Jobs and Deployments run it, as
user 10001 with a read-only root filesystem and no capabilities, against the session's Triton and
Milvus on loopback (``--network host``): ``t2i reindex`` over a mounted folder, the gateway (health
and SearchText), and the search page (``python -m web.server``). The gateway and the page bind
port 0, and the tests read the address they log (no port is picked first and bound after). The
tools image runs ``t2i export`` offline (``--network none``) into a mounted model repository that a
local Triton then serves.
Containers are removed by name; the images stay tagged for the next run, and the build prunes
what a rebuild left untagged.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.index import ImageIndex
from core.manifest import Manifest
from core.records import ModelStamp
from core.settings import Settings
from devstack.process import free_port
from devstack.stack import LocalStack, http_ok
from devstack.triton import start_triton
from inference.triton_client import encoder_from_settings
from t2i.client import GatewayClient
from tests.support.containers import assert_locked_down, assert_page_searches, podman, readable_copy, readable_photos
from tests.support.polling import wait_for

ALIAS = "t2i_containers"
PHOTOS = 6
# The first test of a session that needs the images pays for building them (about 8 minutes on a machine
# that never built them) inside its own timeout: more than the suite's 900 s default.
pytestmark = pytest.mark.timeout(2400)
# What the Deployments and Jobs set: user 10001, a read-only root filesystem, no capabilities, /tmp an emptyDir.
LOCKED_DOWN = ("--user", "10001:10001", "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--tmpfs", "/tmp:rw,size=256m")
PREFIX = f"t2i-test-{os.getpid()}"


@pytest.fixture(scope="session")
def images(container_images: dict[str, str]) -> dict[str, str]:
    """The runtime and tools images (the session builds every image of docker/ once); their tags."""
    return {name: container_images[name] for name in ("runtime", "tools")}


def inspect(image: str) -> dict[str, object]:
    return dict(json.loads(podman("image", "inspect", image).stdout)[0])


def test_images_are_tagged_sized_and_locked_down(images: dict[str, str]) -> None:
    for name, image in images.items():
        info = inspect(image)
        config = info["Config"]
        assert isinstance(config, dict)
        assert config["User"] == "10001:10001" and config["Entrypoint"] == ["t2i"], (name, config)
        size_mb = int(info["Size"]) / 1e6  # type: ignore[call-overload]
        print(f"{image}: {size_mb:.0f} MB")
        assert size_mb < (700 if name == "runtime" else 2500), f"{image} is {size_mb:.0f} MB"
    # The runtime image holds no model toolchain; neither image keeps a trace of the build's host mounts.
    probe = "import importlib.util as u, os; print(sorted(m for m in ('torch', 'transformers', 'optimum', 'onnxruntime') if u.find_spec(m)), sorted(os.listdir('/opt')))"
    runtime = podman("run", "--rm", "--network", "none", *LOCKED_DOWN, "--entrypoint", "python", images["runtime"], "-c", probe).stdout.strip()
    assert runtime == "[] ['venv']", runtime
    tools = podman("run", "--rm", "--network", "none", *LOCKED_DOWN, "--entrypoint", "python", images["tools"], "-c", probe).stdout.strip()
    assert tools == "['onnxruntime', 'optimum', 'torch', 'transformers'] ['t2i', 'venv']", tools


def test_tools_image_exports_offline_a_model_triton_serves(images: dict[str, str], stack: LocalStack, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    models.chmod(0o777)  # the export Job's volume: writable by the container's user
    cache = ("--tmpfs", "/cache:rw,size=64m", "-e", "HF_HOME=/cache/huggingface")  # the Job's cache emptyDir
    export = podman(
        "run", "--rm", "--name", f"{PREFIX}-export", "--network", "none", *LOCKED_DOWN, *cache,
        "-v", f"{models}:/models", images["tools"], "export", "--model", "tiny", "--out", "/models",
        timeout=600,
    )  # fmt: skip
    manifest = Manifest.read(models)
    assert manifest.model_id == "random:tiny", export.stdout
    assert {path.name for path in models.iterdir()} >= {"clip_text", "clip_vision", "manifest.json"}
    triton, ports = start_triton(models, tmp_path / "triton")
    try:
        settings = Settings(triton_url=f"127.0.0.1:{ports.grpc}", model_repository=models)

        async def embed(settings: Settings) -> np.ndarray:
            encoder = encoder_from_settings(settings)
            try:
                vectors, _ = await encoder.encode_texts(["a black dog on grass"])
                return vectors
            finally:
                await encoder.close()

        exported = asyncio.run(embed(settings))
        # The same random weights as the session's host export (seeded): the image exports the same model.
        host = asyncio.run(embed(Settings(triton_url=stack.triton_url, model_repository=stack.repo)))
    finally:
        triton.stop()
    assert exported.shape == (1, manifest.dimension) and abs(float(np.linalg.norm(exported)) - 1) < 1e-5
    assert manifest.checksum == Manifest.read(stack.repo).checksum and np.allclose(exported, host, atol=1e-5)


@pytest.fixture(scope="module")
def mounts(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What the pods mount, readable by user 10001: the model repository, the images, the token Secrets."""
    base = tmp_path_factory.mktemp("containers")
    base.chmod(0o755)
    photos = readable_photos(base / "images", PHOTOS)
    auth = base / "auth"
    readable_copy(stack.tokens.server_file, auth / "tokens")
    readable_copy(stack.tokens.client_file("read"), auth / "read-token")
    auth.chmod(0o755)
    return {"models": readable_copy(Path(stack.repo), base / "models"), "images": photos, "auth": auth}


def runtime_env(stack: LocalStack) -> tuple[list[str], dict[str, str]]:
    """``-e`` options that point a container at the session's Triton and Milvus (the Milvus token by name, never on the command line)."""
    options = [
        "-e", f"T2I_TRITON_URL={stack.triton_url}", "-e", f"T2I_MILVUS_URI={stack.milvus_uri}", "-e", "T2I_MILVUS_TOKEN",
        "-e", "T2I_MODEL_REPOSITORY=/models", "-e", f"T2I_COLLECTION_ALIAS={ALIAS}",
        "-e", "T2I_TRITON_TIMEOUT_S=5", "-e", "T2I_MILVUS_TIMEOUT_S=5",
    ]  # fmt: skip
    return options, {"T2I_MILVUS_TOKEN": stack.milvus_token}


@pytest.fixture(scope="module")
def reindexed(images: dict[str, str], stack: LocalStack, mounts: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    """``t2i reindex /images`` in the runtime image, as the reindex Job runs it, into an alias of its own."""
    options, env = runtime_env(stack)
    return podman(
        "run", "--rm", "--name", f"{PREFIX}-reindex", "--network", "host", *LOCKED_DOWN, *options,
        "-v", f"{mounts['models']}:/models:ro", "-v", f"{mounts['images']}:/images:ro",
        images["runtime"], "reindex", "/images", "--no-progress",
        env=env, timeout=600, check=False,
    )  # fmt: skip


def test_runtime_image_reindexes_a_mounted_folder(reindexed: subprocess.CompletedProcess[str], stack: LocalStack) -> None:
    assert reindexed.returncode == 0, reindexed.stdout + reindexed.stderr
    index = ImageIndex(stack.milvus_uri, ALIAS, ModelStamp.of(Manifest.read(stack.repo)), timeout_s=10, token=stack.milvus_token)
    try:
        collection = index.active_collection()
        assert collection is not None and index.count(collection) == PHOTOS, reindexed.stdout
    finally:
        index.close()


def start_gateway(image: str, stack: LocalStack, mounts: dict[str, Path], name: str) -> str:
    """Start the gateway in the runtime image (its default command, ``t2i serve``), locked down; its address once SERVING."""
    options, env = runtime_env(stack)
    # Port 0 in the host's network, read back from its log; the metrics port must be told (0 turns it off): chosen here.
    podman(
        "run", "--detach", "--name", name, "--network", "host", *LOCKED_DOWN, *options,
        "-e", "T2I_LISTEN=127.0.0.1:0", "-e", f"T2I_METRICS_PORT={free_port()}", "-e", "T2I_AUTH_TOKENS_FILE=/etc/t2i/auth/tokens",
        "-e", "T2I_HEALTH_INTERVAL_S=0.5",
        "-v", f"{mounts['models']}:/models:ro", "-v", f"{mounts['auth']}:/etc/t2i/auth:ro",
        image,
        env=env,
    )  # fmt: skip
    try:
        address = logged_address(name, GATEWAY_BOUND, 90)
        wait_for(lambda: health(address) == health_pb2.HealthCheckResponse.SERVING, 90, f"{name} SERVING")
    except AssertionError:
        remove(name)
        raise
    return address


GATEWAY_BOUND = re.compile(r"gateway listening on (127\.0\.0\.1:[1-9]\d*) \(")  # the gateway's log line once bound
PAGE_BOUND = re.compile(r"search page listening on http://(127\.0\.0\.1:[1-9]\d*)/")


def logged_address(name: str, bound: re.Pattern[str], timeout_s: float) -> str:
    """The ``host:port`` that a server of ours in container ``name``, started on port 0, logged once it was bound."""
    found: list[str] = []

    def logged() -> bool:
        logs = podman("logs", name, check=False)
        found[:] = bound.findall(logs.stdout + logs.stderr)
        return bool(found)

    wait_for(logged, timeout_s, f"{name} to log the address it bound")
    return found[0]


def remove(name: str) -> None:
    """Remove a container (killed after 5 s), printing the end of its log for a failing test's report."""
    logs = podman("logs", name, check=False)
    podman("rm", "--force", "--time", "5", name, check=False)
    print(f"{name}:", logs.stdout[-2000:], logs.stderr[-2000:])


@pytest.fixture(scope="module")
def gateway(images: dict[str, str], stack: LocalStack, mounts: dict[str, Path], reindexed: subprocess.CompletedProcess[str]) -> Iterator[str]:
    """A gateway container serving the alias the reindex container filled; its address."""
    assert reindexed.returncode == 0, reindexed.stderr
    name = f"{PREFIX}-gateway"
    address = start_gateway(images["runtime"], stack, mounts, name)
    try:
        yield address
    finally:
        remove(name)


def health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def test_gateway_container_answers_health_and_search_as_user_10001_without_capabilities(gateway: str, stack: LocalStack) -> None:
    assert health(gateway, "liveness") == health_pb2.HealthCheckResponse.SERVING
    with GatewayClient(gateway, timeout_s=20, token=stack.token("read")) as client:
        reply = client.search_text("a cat", top_k=3)
        assert len(reply.hits) == 3 and all(hit.uri.startswith("/images/") for hit in reply.hits), reply
        assert client.info().count == PHOTOS
    with GatewayClient(gateway, timeout_s=20, token="not-a-token") as stranger, pytest.raises(grpc.RpcError) as refused:
        stranger.search_text("a cat")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert_locked_down(f"{PREFIX}-gateway")


def test_page_container_searches_through_the_gateway_container(images: dict[str, str], gateway: str, mounts: dict[str, Path]) -> None:
    """``python -m web.server`` in the runtime image, in front of the gateway container, showing thumbnails of the mounted folder."""
    name = f"{PREFIX}-web"
    podman(
        "run", "--detach", "--name", name, "--network", "host", *LOCKED_DOWN,
        "-e", "T2I_WEB_LISTEN=127.0.0.1:0", "-e", f"T2I_WEB_GATEWAY={gateway}",
        "-e", "T2I_WEB_IMAGE_ROOTS=/images", "-e", "T2I_TOKEN_FILE=/etc/t2i/auth/read-token",
        "-v", f"{mounts['images']}:/images:ro", "-v", f"{mounts['auth']}:/etc/t2i/auth:ro",
        "--entrypoint", "python", images["runtime"], "-m", "web.server",
    )  # fmt: skip
    try:
        address = logged_address(name, PAGE_BOUND, 60)
        wait_for(lambda: http_ok(f"http://{address}/healthz"), 60, "the page container answering")
        assert_page_searches(f"http://{address}")
        assert_locked_down(name)
    finally:
        remove(name)


def test_gateway_container_stops_cleanly_on_sigterm(
    images: dict[str, str], stack: LocalStack, mounts: dict[str, Path], reindexed: subprocess.CompletedProcess[str]
) -> None:
    """The kubelet's stop: SIGTERM to the container's process, NOT_SERVING, drain, exit 0 (before podman's kill after 30 s)."""
    assert reindexed.returncode == 0, reindexed.stderr
    name = f"{PREFIX}-gateway-stop"
    start_gateway(images["runtime"], stack, mounts, name)
    try:
        podman("stop", "--time", "30", name, timeout=60)
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, state
    finally:
        remove(name)
