"""compose.yaml run under podman, as docs/deploy.md ("One host") runs it, with the images ``make images`` builds.

podman-compose 1.6 merges ``compose.yaml``, the CPU override ``compose.cpu.yaml`` and
``compose.local.yaml`` (the local images in place of the upstream ones) and runs the docs' steps: the
export once, ``up -d``, the reindex as a one-off service, then a search through the published gateway
and the page. The tokens are files mounted as compose secrets. podman runs no scheduled healthchecks
without systemd, so the test runs each service's own healthcheck (``podman healthcheck run``) as
Docker's scheduler would, and waits on it. The project name and the host ports are fixed: one run at
a time per host.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from core.auth import LocalTokens
from core.manifest import Manifest
from t2i.client import GatewayClient
from tests.support.containers import assert_locked_down, assert_page_searches, podman, podman_env, readable_copy, readable_photos
from tests.support.deploy_tools import deploy_tool
from tests.support.polling import wait_for
from tests.support.stack import PROJECT_ROOT

FILES = ("compose.yaml", "compose.cpu.yaml", "compose.local.yaml")
PROJECT = "t2i_compose_test"  # not the files' own name, so that a user's stack of this host is left alone
PHOTOS = 6
# The first test of a session that needs the images pays for building them (about 8 minutes on a machine
# that never built them) inside its own timeout: more than the suite's 900 s default.
pytestmark = pytest.mark.timeout(2400)
# Host ports below Linux's ephemeral range (32768-60999): no outgoing connection of another process takes them.
PORTS = {"T2I_PUBLISH_GATEWAY_PORT": 25051, "T2I_PUBLISH_METRICS_PORT": 29464, "T2I_PUBLISH_WEB_PORT": 28080, "T2I_PUBLISH_TRITON_METRICS_PORT": 28002}


class Compose:
    """podman-compose on the three files, with the test's folders and the local images."""

    def __init__(self, work: Path, images: dict[str, str]):
        self.work = work
        outside = ("T2I_", "TRITON_", "MILVUS_", "EXPORT_")  # the caller's own settings do not leak in
        self.env = {k: v for k, v in podman_env().items() if not k.startswith(outside)}
        self.env.update({name: str(port) for name, port in PORTS.items()})
        self.env.update(
            T2I_IMAGE=images["runtime"],
            T2I_TOOLS_IMAGE=images["tools"],
            TRITON_CPU_IMAGE=images["triton-cpu"],
            MILVUS_IMAGE=images["milvus"],
            T2I_MODEL_REPOSITORY_DIR=str(work / "data" / "model_repository"),
            T2I_IMAGES_DIR=str(work / "data" / "images"),
            T2I_SECRETS_DIR=str(work / "secrets"),
            EXPORT_MODEL="tiny",
        )

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        files = [f"--file={PROJECT_ROOT / name}" for name in FILES]
        # The one-off services' profile for run (as docs/deploy.md says) and down, never for up: with it,
        # up starts export and reindex too, and that reindex raced the test's own run (6 files: 0 indexed, 6 unchanged).
        profile = [] if args[0] == "up" else ["--profile=tools"]
        command = [deploy_tool("podman-compose"), f"--project-name={PROJECT}", *files, *profile, *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=self.env, cwd=self.work, check=False)
        if check:
            assert done.returncode == 0, f"podman-compose {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    @staticmethod
    def container(service: str) -> str:
        return f"{PROJECT}_{service}_1"

    def healthy(self, service: str) -> bool:
        """The service's own healthcheck, run once."""
        return podman("healthcheck", "run", self.container(service), check=False, timeout=60).returncode == 0

    def wait_healthy(self, service: str, timeout_s: float) -> None:
        try:
            wait_for(lambda: self.healthy(service), timeout_s, f"{service} healthy")
        except AssertionError as exc:
            logs = podman("logs", "--tail", "40", self.container(service), check=False)
            raise AssertionError(f"{exc}\n{logs.stdout}{logs.stderr}") from exc


@pytest.fixture(scope="module")
def compose(container_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    """The docs' steps: the secrets and folders, the export, ``up -d``, the healthchecks, the reindex."""
    work = tmp_path_factory.mktemp("compose")
    work.chmod(0o755)
    models = work / "data" / "model_repository"
    models.mkdir(parents=True)
    models.chmod(0o777)  # writable by the export's user 10001 (the docs chown it)
    readable_photos(work / "data" / "images", PHOTOS)
    tokens = LocalTokens(work / "auth").ensure()
    readable_copy(tokens.server_file, work / "secrets" / "gateway-tokens")
    readable_copy(tokens.client_file("read"), work / "secrets" / "web-token")
    (work / "secrets" / "milvus-token").write_text("root:Milvus")  # the local Milvus keeps the default root password
    compose = Compose(work, container_images)
    compose("down", "--volumes", check=False)  # what an interrupted run left
    started = time.monotonic()

    def step(what: str) -> None:
        print(f"{time.monotonic() - started:5.0f} s  {what}", flush=True)

    try:
        exported = compose("run", "--rm", "export", timeout=600)
        assert Manifest.read(models).model_id == "random:tiny", exported.stdout
        step("export exited 0")
        compose("up", "-d")
        compose.wait_healthy("milvus", 180)
        compose.wait_healthy("triton", 180)
        step("Milvus and Triton healthy")
        reindexed = compose("run", "--rm", "reindex", timeout=300)
        assert f"{PHOTOS} files: {PHOTOS} indexed" in reindexed.stdout + reindexed.stderr, reindexed.stdout + reindexed.stderr
        step("reindex exited 0")
        compose.wait_healthy("gateway", 120)
        compose.wait_healthy("web", 60)
        step("gateway and page healthy")
        yield compose
    finally:
        compose("down", "--volumes", "--timeout=5", check=False, timeout=180)


def test_search_through_the_published_gateway_returns_the_reindexed_photos(compose: Compose) -> None:
    token = (compose.work / "secrets" / "web-token").read_text().strip()
    address = f"127.0.0.1:{PORTS['T2I_PUBLISH_GATEWAY_PORT']}"
    with GatewayClient(address, timeout_s=20, token=token) as client:
        reply = client.search_text("a cat", top_k=3)
        assert len(reply.hits) == 3 and all(hit.uri.startswith("/images/") for hit in reply.hits), reply
        assert client.info().count == PHOTOS
    # The gateway checks tokens against the secret's hashes: another token is refused.
    with GatewayClient(address, timeout_s=20, token="not-the-read-token") as client, pytest.raises(grpc.RpcError) as refused:
        client.search_text("a cat", top_k=3)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_page_searches_and_shows_thumbnails(compose: Compose) -> None:
    assert_page_searches(f"http://127.0.0.1:{PORTS['T2I_PUBLISH_WEB_PORT']}")


def test_the_project_containers_run_locked_down(compose: Compose) -> None:
    """User 10001, a read-only root filesystem and no capabilities, as compose.yaml asks."""
    for service in ("gateway", "web"):
        assert_locked_down(compose.container(service))


def test_a_one_off_reindex_exits_with_the_jobs_codes(compose: Compose) -> None:
    """``run --rm reindex`` passes the job's exit code on: 2 for a location that does not exist (reindex/report.py)."""
    done = compose("run", "--rm", "reindex", "reindex", "/images/missing", "--no-progress", check=False, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "/images/missing" in done.stdout + done.stderr
