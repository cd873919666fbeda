"""Launch the standalone Milvus server that ships in the ``milvus`` wheel, on loopback.

The wheel's own ``milvus-server`` wrapper leaves its child running when it gets SIGTERM, so the
``milvus`` binary is started here directly, as a process this module owns: the wrapper's config
code writes ``milvus.yaml`` (binding the exact proxy port asked for) and unpacks the binary.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devstack.process import ManagedProcess, free_port


@dataclass
class MilvusPorts:
    """Loopback ports of one Milvus server: client (proxy), health, and its embedded etcd."""

    proxy: int = field(default_factory=free_port)
    health: int = field(default_factory=free_port)
    etcd_client: int = field(default_factory=free_port)
    etcd_peer: int = field(default_factory=free_port)


def milvus_process(data_dir: Path, ports: MilvusPorts) -> ManagedProcess:
    """Write the config for ``data_dir`` and return a not-yet-started Milvus process.

    Raises:
        ImportError: with a hint when the ``milvus`` wheel is missing.
    """
    try:
        from milvus import MilvusServerConfig, _initialize_data_files
    except ImportError as exc:  # pragma: no cover - install problem
        raise ImportError("the 'milvus' wheel is not installed; run 'make install'") from exc
    data_dir = Path(data_dir).resolve()
    written = data_dir / "configs" / "ports.json"
    if not (written.is_file() and json.loads(written.read_text()) == asdict(ports)):
        # A restart on the same ports reuses the config: the wrapper's bind test would fail on
        # ports still in TIME_WAIT, which the server itself (SO_REUSEADDR) can bind.
        config = MilvusServerConfig(data_dir=str(data_dir), proxy_port=ports.proxy, etcd_port=ports.etcd_client)
        config.resolve()
        _initialize_data_files(config.base_data_dir)
        _use_own_etcd_ports(data_dir, ports)
        written.write_text(json.dumps(asdict(ports)))
    bin_dir = data_dir / "bin"
    env = dict(os.environ)
    env.update(
        DEPLOY_MODE="STANDALONE",
        METRICS_PORT=str(ports.health),
        MILVUS_RUN_DIR=str(data_dir / "run"),
        LD_LIBRARY_PATH=":".join(filter(None, [str(bin_dir), env.get("LD_LIBRARY_PATH")])),
    )
    return ManagedProcess("milvus", [str(bin_dir / "milvus"), "run", "standalone"], data_dir / "logs" / "milvus.log", env=env, cwd=data_dir)


def _use_own_etcd_ports(data_dir: Path, ports: MilvusPorts) -> None:
    """Point the embedded etcd at its own ports; by default it takes 2379/2380, so two servers clash."""
    etcd_config = data_dir / "configs" / "etcd.yaml"
    client, peer = f"http://127.0.0.1:{ports.etcd_client}", f"http://127.0.0.1:{ports.etcd_peer}"
    etcd_config.write_text(
        f"name: default\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n"
        f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\ninitial-cluster: default={peer}\n"
    )
    milvus_yaml = data_dir / "configs" / "milvus.yaml"
    text = milvus_yaml.read_text()
    milvus_yaml.write_text(text.replace("\netcd:\n", f"\netcd:\n  config:\n    path: {etcd_config}\n", 1))


def healthy(health_port: int) -> bool:
    """True when Milvus answers its health check."""
    with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=2) as resp:
        return b"OK" in resp.read()


def start_milvus(data_dir: Path, ports: MilvusPorts | None = None, timeout_s: float = 180.0) -> tuple[ManagedProcess, MilvusPorts]:
    """Start Milvus and wait until it is healthy.

    Raises:
        ProcessFailed: Milvus exited or did not become healthy; the message has its log tail.
    """
    ports = ports or MilvusPorts()
    process = milvus_process(data_dir, ports).start()
    try:
        process.wait_until(lambda: healthy(ports.health), timeout_s, "healthy")
    except BaseException:
        process.stop(timeout_s=5)
        raise
    return process, ports
