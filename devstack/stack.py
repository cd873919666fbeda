"""The local stack on loopback: Milvus, Triton and the gateway as child processes.

Used by ``t2i up``, ``t2i demo`` and the integration tests. Children are stopped in reverse order
by their own process ids, each with a kill after a timeout, and die with the launcher if it is
killed. The stack is closed like a deployment: the gateway needs tokens (a read token and a
write token are generated in ``<data_dir>/auth``, mode 0600), and Milvus has authentication on
with a generated root password (``<data_dir>/milvus/root.token``).
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.auth import LocalTokens
from core.listen import PORT_FILE_ENV
from core.settings import Settings, split_address
from devstack.milvus import TOKEN_FILE, MilvusPorts, milvus_token, start_milvus
from devstack.process import ManagedProcess, free_port, retry_taken_ports
from devstack.triton import TritonPorts, start_triton

logger = logging.getLogger(__name__)

ANY_PORT = -1  # LocalStack.metrics_port: a free one, chosen at construction


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when ``url`` answers 200."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return bool(response.status == 200)


def start_web(address: str, gateway_address: str, image_roots: str, log_path: Path, token_file: Path | None = None) -> ManagedProcess:
    """Start the search page (``python -m web.server``) on ``address`` and wait until it answers.

    Port 0 in ``address`` lets the page bind any free port; the process's ``address`` is the one it
    got (it reports it in a file next to ``log_path``). ``token_file`` holds the read token the page
    presents to the gateway.
    """
    port_file = log_path.with_suffix(".address")
    port_file.unlink(missing_ok=True)
    env = {**os.environ, "T2I_WEB_LISTEN": address, "T2I_WEB_GATEWAY": gateway_address, "T2I_WEB_IMAGE_ROOTS": image_roots, PORT_FILE_ENV: str(port_file)}
    if token_file is not None:
        env["T2I_TOKEN_FILE"] = str(token_file)
    process = ManagedProcess("web", [sys.executable, "-m", "web.server"], log_path, env=env, ports=(split_address(address)[1],)).start()
    try:
        bound = process.wait_reported(port_file, 60)
        process.wait_until(lambda: http_ok(f"http://{bound}/healthz"), 60, "answering")
    except BaseException:
        process.stop()
        raise
    return process


def gateway_serving(address: str, timeout_s: float = 2.0) -> bool:
    """True when the gateway at ``address`` reports SERVING for the overall health check."""
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        return reply.status == health_pb2.HealthCheckResponse.SERVING


@dataclass
class LocalStack:
    """Milvus + Triton + gateway for one model repository and one data folder.

    Attributes:
        repo: Exported Triton model repository.
        data_dir: Where Milvus data and all logs go.
        gateway_address: ``host:port`` for the gateway; port 0 lets it bind any free port, and the
            address is then the one it got, once it has started (``core.listen``).
        metrics_port: Gateway metrics port (0 disables); by default a free one (``free_port``, as the
            setting cannot say "any"), chosen again when the gateway finds it taken.
        alias: Milvus alias the gateway queries.
        extra_env: More ``T2I_*`` settings for the gateway (timeouts, limits).
        triton_env: The python backend's virtual environment (default ``T2I_TRITON_ENV``).
        web_address: ``host:port`` for the search page (port 0: any, as for the gateway), or None for no page.
        image_roots: Folders the page may show thumbnails from, separated by ':'.
    """

    repo: Path
    data_dir: Path
    gateway_address: str = "127.0.0.1:50051"
    metrics_port: int = ANY_PORT
    alias: str = "t2i_images"
    extra_env: dict[str, str] = field(default_factory=dict)
    triton_env: Path | None = None
    web_address: str | None = None
    image_roots: str = ""
    web: ManagedProcess | None = None
    milvus: ManagedProcess | None = None
    triton: ManagedProcess | None = None
    gateway: ManagedProcess | None = None
    milvus_ports: MilvusPorts | None = None
    triton_ports: TritonPorts | None = None
    metrics_port_chosen: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.metrics_port == ANY_PORT:
            self.metrics_port, self.metrics_port_chosen = free_port(), True

    @property
    def milvus_uri(self) -> str:
        """URI of the Milvus server."""
        assert self.milvus_ports, "stack not started"
        return f"http://127.0.0.1:{self.milvus_ports.proxy}"

    @property
    def milvus_token(self) -> str:
        """``root:<password>`` of this stack's Milvus."""
        return milvus_token(self.data_dir / "milvus")

    @property
    def tokens(self) -> LocalTokens:
        """The gateway's token file and the read and write tokens (generated at start)."""
        return LocalTokens(self.data_dir / "auth")

    def token(self, scope: str = "write") -> str:
        """The raw ``read`` or ``write`` token of this stack's gateway."""
        return self.tokens.token(scope)

    @property
    def triton_url(self) -> str:
        """gRPC address of Triton."""
        assert self.triton_ports, "stack not started"
        return f"127.0.0.1:{self.triton_ports.grpc}"

    def env(self) -> dict[str, str]:
        """``T2I_*`` variables that point a gateway or reindex job at this stack."""
        return {
            "T2I_TRITON_URL": self.triton_url,
            "T2I_MILVUS_URI": self.milvus_uri,
            "T2I_MILVUS_TOKEN_FILE": str((self.data_dir / "milvus" / TOKEN_FILE).resolve()),
            "T2I_MODEL_REPOSITORY": str(Path(self.repo).resolve()),
            "T2I_COLLECTION_ALIAS": self.alias,
            "T2I_LISTEN": self.gateway_address,
            "T2I_METRICS_PORT": str(self.metrics_port),
            "T2I_AUTH_TOKENS_FILE": str(self.tokens.server_file.resolve()),
        }

    def settings(self) -> Settings:
        """Settings that point a reindex job (or any client of Triton and Milvus) at this stack."""
        return Settings(
            triton_url=self.triton_url,
            milvus_uri=self.milvus_uri,
            milvus_token=self.milvus_token,
            model_repository=Path(self.repo).resolve(),
            collection_alias=self.alias,
        )

    def start(self, gateway: bool = True) -> LocalStack:
        """Start Milvus, Triton and (optionally) the gateway; wait for each to be ready."""
        try:
            self.tokens.ensure()
            self.milvus, self.milvus_ports = start_milvus(self.data_dir / "milvus", self.milvus_ports)
            self.triton, self.triton_ports = start_triton(self.repo, self.data_dir / "triton", self.triton_ports, triton_env=self.triton_env)
            if gateway:
                self.start_gateway()
                if self.web_address:
                    self.start_web()
        except BaseException:
            self.stop()
            raise
        return self

    def start_gateway(self) -> ManagedProcess:
        """Start the gateway process and wait until it reports SERVING; ``gateway_address`` is then the address it bound.

        A metrics port chosen here that the gateway finds taken is chosen again (``retry_taken_ports``).
        """
        if not self.metrics_port_chosen:
            return self._start_gateway()
        attempts = 0

        def start() -> ManagedProcess:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                self.metrics_port = free_port()
            # The wait for ports stays: a restarted gateway's own port may still be held by the one that was stopped.
            return self._start_gateway()

        return retry_taken_ports(start, "gateway")

    def _start_gateway(self) -> ManagedProcess:
        port_file = self.data_dir / "gateway.address"
        port_file.unlink(missing_ok=True)
        env = {**os.environ, **self.env(), **self.extra_env, "PYTHONUNBUFFERED": "1", PORT_FILE_ENV: str(port_file)}
        port = split_address(self.gateway_address)[1]
        self.gateway = ManagedProcess(
            "gateway",
            [sys.executable, "-m", "gateway.server"],
            self.data_dir / "gateway.log",
            env=env,
            ports=(port, self.metrics_port),
        ).start()
        try:
            self.gateway_address = self.gateway.wait_reported(port_file, 60)
            self.gateway.wait_until(lambda: gateway_serving(self.gateway_address), 60, "SERVING")
        except BaseException:
            self.gateway.stop()
            raise
        return self.gateway

    def start_web(self) -> ManagedProcess:
        """Start the search page and wait until it answers; ``web_address`` is then the address it bound."""
        assert self.web_address, "no web_address"
        self.web = start_web(self.web_address, self.gateway_address, self.image_roots, self.data_dir / "web.log", self.tokens.client_file("read"))
        self.web_address = self.web.address
        return self.web

    def stop(self) -> None:
        """Stop the page, the gateway, Triton and Milvus, in that order."""
        for process, timeout in ((self.web, 10.0), (self.gateway, 10.0), (self.triton, 10.0), (self.milvus, 5.0)):
            if process is not None:
                process.stop(timeout_s=timeout)

    def describe(self) -> str:
        """Where each component listens, one line each."""
        return "\n".join(
            [
                *([f"  web      http://{self.web_address}/  (the search page)"] if self.web_address else []),
                f"  gateway  grpc://{self.gateway_address}  (metrics http://127.0.0.1:{self.metrics_port}/metrics)",
                f"  triton   grpc://{self.triton_url}  (http 127.0.0.1:{self.triton_ports.http if self.triton_ports else '?'})",
                f"  milvus   {self.milvus_uri if self.milvus_ports else '?'}",
                f"  tokens   {self.tokens.client_file('read')} (read), {self.tokens.client_file('write')} (write, mode 0600)",
                f"  logs     {self.data_dir}",
            ]
        )

    def __enter__(self) -> LocalStack:
        # ``with stack:`` starts it; ``with stack.start(gateway=False):`` must not start a second Milvus on the same ports.
        return self if self.milvus is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
