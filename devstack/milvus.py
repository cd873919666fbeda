"""Launch the standalone Milvus server that ships in the ``milvus`` wheel, on loopback, with authentication.

The wheel's own ``milvus-server`` wrapper leaves its child running when it gets SIGTERM, so the
``milvus`` binary is started here directly, as a process this module owns: the wrapper's config
code writes ``milvus.yaml`` (binding the exact proxy port asked for) and unpacks the binary.
The binaries (about 250 MB) are unpacked once per environment and linked into each data folder.

Milvus 2.3 binds its coordinators' ports on every interface, whatever the config says. So it
runs in a network namespace of its own (``devstack.sandbox``), and only its proxy and health
ports are reachable, on the host's 127.0.0.1. Where namespaces are not allowed (some containers),
it runs on the host with a warning that its internal ports are open (``namespace_prefix``).

Authentication is on. At the first start the root password is changed from Milvus's default to
a generated one. The token ``root:<password>`` is kept in ``<data_dir>/root.token`` (mode 0600),
where ``T2I_MILVUS_TOKEN_FILE`` can point; ``milvus_token`` reads it.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.auth import write_private
from devstack.process import PORT_RELEASE_S, ChosenPorts, ManagedProcess, PortTaken, ProcessFailed, namespace_prefix, start_on_ports, wait_for_port
from devstack.sockets import describe_pid, holders

logger = logging.getLogger(__name__)

DEFAULT_ROOT = "root:Milvus"  # what a fresh Milvus accepts until the password is changed
TOKEN_FILE = "root.token"


@dataclass
class MilvusPorts(ChosenPorts):
    """Loopback ports of one Milvus server: client (proxy), health, and its embedded etcd.

    Each one left 0 is chosen (``free_port``), and chosen again when it was taken (``ChosenPorts``).
    """

    proxy: int = 0
    health: int = 0
    etcd_client: int = 0
    etcd_peer: int = 0


def _bind_loopback(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` for a sandboxed child to inherit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        taken = ", ".join(describe_pid(pid) for pid in holders(port)) or "another process"
        raise PortTaken(f"cannot start milvus: port {port} on 127.0.0.1 is taken by {taken} ({exc.strerror}); stop it or choose another port", port) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _try_bind(port: int) -> socket.socket | None:
    """The wheel's port test (``MilvusServerConfig.try_bind_port``), binding as the server does: with ``SO_REUSEADDR``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        return None
    return sock


def _holders_of(ports: MilvusPorts) -> str:
    """Who listens on any of ``ports``, for an error message."""
    named = [f"port {port}: {describe_pid(pid)}" for port in asdict(ports).values() for pid in holders(port)]
    return "; ".join(named) or "no listener is visible now"


def milvus_process(data_dir: Path, ports: MilvusPorts, port_wait_s: float = PORT_RELEASE_S) -> ManagedProcess:
    """Write the config for ``data_dir`` and return a not-yet-started Milvus process.

    In a sandbox, the proxy and health ports are bound here on loopback and handed to the process
    when it starts. A proxy or health port given by the caller that another process still holds is
    waited for, up to ``port_wait_s``: a stack stopped a moment ago lets it go within seconds.

    Raises:
        ImportError: with a hint when the ``milvus`` wheel is missing.
        ProcessFailed: the proxy or health port is still taken after ``port_wait_s`` (the holder is named).
    """
    try:
        from milvus import MilvusServerConfig, _initialize_data_files
    except ImportError as exc:  # pragma: no cover - install problem
        raise ImportError("the 'milvus' wheel is not installed; run 'make install'") from exc
    data_dir = Path(data_dir).resolve()
    for port in (ports.proxy, ports.health):
        # A port chosen a moment ago that is taken now is not being released by a stopping stack: no wait, new ports instead.
        wait_for_port(port, "milvus", 0 if port in ports.chosen_numbers else port_wait_s)
    _configure(data_dir, ports, MilvusServerConfig)
    _harden(data_dir / "configs" / "milvus.yaml")
    _link_binaries(data_dir, _initialize_data_files)  # also after a restart: the environment may be new
    bin_dir = data_dir / "bin"
    env = dict(os.environ)
    env.update(
        DEPLOY_MODE="STANDALONE",
        METRICS_PORT=str(ports.health),
        MILVUS_RUN_DIR=str(data_dir / "run"),
        LD_LIBRARY_PATH=":".join(filter(None, [str(bin_dir), env.get("LD_LIBRARY_PATH")])),
    )
    argv = [str(bin_dir / "milvus"), "run", "standalone"]
    log = data_dir / "logs" / "milvus.log"
    prefix = namespace_prefix("--net")
    if prefix is None:
        logger.warning("no network namespace for the local Milvus: its internal ports will listen on every interface")
        return ManagedProcess(
            "milvus", argv, log, env=env, cwd=data_dir, ports=(ports.proxy, ports.health), port_wait_s=port_wait_s, chosen_ports=ports.chosen_numbers
        )
    return _sandboxed(prefix, argv, log, env, data_dir, ports)


def _configure(data_dir: Path, ports: MilvusPorts, server_config: Callable[..., Any]) -> None:
    """Write the wrapper's config for ``ports`` into ``data_dir``, unless the last one written has them.

    Raises:
        PortTaken: a port was taken between the wait and the wrapper's bind test (its holder named).
    """
    written = data_dir / "configs" / "ports.json"
    if written.is_file() and json.loads(written.read_text()) == asdict(ports):
        return
    config = server_config(data_dir=str(data_dir), proxy_port=ports.proxy, etcd_port=ports.etcd_client)
    # The wrapper's bind test has no SO_REUSEADDR: it fails on a port whose last connections
    # are in TIME_WAIT (for a minute after a stack stops), which the server itself binds. Seen
    # as "RuntimeError: set proxy_port=19530, but bind failed" from 'make up' after a stop.
    config.try_bind_port = _try_bind
    try:
        config.resolve()
    except RuntimeError as exc:  # a port taken between the wait and the test
        raise PortTaken(f"cannot start milvus: {exc} ({_holders_of(ports)}); stop that process or choose another port") from exc
    _use_own_etcd_ports(data_dir, ports)
    written.write_text(json.dumps(asdict(ports)))


def _sandboxed(prefix: tuple[str, ...], argv: list[str], log: Path, env: dict[str, str], data_dir: Path, ports: MilvusPorts) -> ManagedProcess:
    """Milvus in its own network namespace, its proxy and health ports bound here on loopback and handed in."""
    sockets = [_bind_loopback(ports.proxy)]
    try:
        sockets.append(_bind_loopback(ports.health))
    except ProcessFailed:
        sockets[0].close()
        raise
    forwards = [f"--listen={sock.fileno()}:{port}" for sock, port in zip(sockets, (ports.proxy, ports.health), strict=True)]
    return ManagedProcess(
        "milvus",
        [*prefix, sys.executable, "-m", "devstack.sandbox", *forwards, "--", *argv],
        log,
        env=env,
        cwd=data_dir,
        ports=(ports.proxy, ports.health),
        inherit=sockets,
    )


def _link_binaries(data_dir: Path, unpack: Callable[[str], None]) -> None:
    """Point ``data_dir/bin`` at binaries unpacked once for this environment (``<prefix>/share/t2i``).

    Each stack used to unpack its own copy: with several stacks per test run that was gigabytes of
    disk. A ``bin`` folder from that time is refreshed in place; where the shared folder cannot be
    written, the binaries are unpacked into ``data_dir`` as before.
    """
    bin_dir = data_dir / "bin"
    if bin_dir.is_dir() and not bin_dir.is_symlink():
        unpack(str(data_dir))
        return
    shared = Path(sys.prefix) / "share" / "t2i" / f"milvus-{importlib.metadata.version('milvus')}"
    if not shared.is_dir():
        try:
            shared.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=shared.parent))
        except OSError as exc:
            logger.warning("cannot share the Milvus binaries in %s (%s): unpacking them into %s", shared.parent, exc, data_dir)
            unpack(str(data_dir))
            return
        logger.info("unpacking the Milvus binaries into %s (once per environment)", shared)
        try:
            unpack(str(staging))
            os.replace(staging / "bin", shared)  # atomic: a concurrent unpack loses the race harmlessly
        except OSError:
            if not shared.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    bin_dir.unlink(missing_ok=True)
    bin_dir.symlink_to(shared, target_is_directory=True)


def _harden(milvus_yaml: Path) -> None:
    """Authentication on, and every component registering itself at 127.0.0.1."""
    text = milvus_yaml.read_text()
    text = text.replace("authorizationEnabled: false", "authorizationEnabled: true", 1)
    text = "\n".join("  ip: 127.0.0.1" if line.startswith("  ip: #") else line for line in text.splitlines()) + "\n"
    milvus_yaml.write_text(text)


def milvus_token(data_dir: Path) -> str:
    """``root:<password>`` of the Milvus in ``data_dir`` (its generated root password)."""
    return (Path(data_dir) / TOKEN_FILE).read_text().strip()


def local_uri(ports: MilvusPorts, data_dir: Path) -> str:
    """``http://root:<password>@127.0.0.1:<proxy>``: the URI of a local Milvus with its credentials, for benchmark scripts.

    pymilvus takes the token from the URI, so code that passes a URI around needs no other change.
    Anything that logs such a URI must redact it (``core.settings.redact_uri``).
    """
    return f"http://{milvus_token(data_dir)}@127.0.0.1:{ports.proxy}"


def secure_root(uri: str, data_dir: Path) -> str:
    """Replace Milvus's default root password with a generated one (once); returns the root token.

    Raises:
        ProcessFailed: no token is stored and Milvus refuses its default password (a data folder from elsewhere).
    """
    from pymilvus import MilvusClient

    stored = Path(data_dir) / TOKEN_FILE
    if stored.is_file():
        return milvus_token(data_dir)
    password = secrets.token_urlsafe(24)
    try:
        client = MilvusClient(uri=uri, token=DEFAULT_ROOT, timeout=30)
        client.update_password("root", DEFAULT_ROOT.split(":", 1)[1], password)
        client.close()
    except Exception as exc:
        raise ProcessFailed(f"could not set the Milvus root password in {data_dir} ({exc}); remove that folder to start afresh") from exc
    write_private(stored, f"root:{password}\n")
    return milvus_token(data_dir)


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


def start_milvus(
    data_dir: Path, ports: MilvusPorts | None = None, timeout_s: float = 180.0, port_wait_s: float = PORT_RELEASE_S
) -> tuple[ManagedProcess, MilvusPorts]:
    """Start Milvus, wait until it is healthy, and give root its generated password (``milvus_token`` reads it).

    Without ``ports``, free ones are chosen (``free_port``). Ports that were chosen (all of them,
    or those left 0 in ``ports``) are chosen again, up to ``PORT_ATTEMPTS`` starts, when one was
    taken before Milvus bound it; ports given are never changed (``start_on_ports``).

    Returns:
        The process and its ports, all fixed now (a restart on them keeps them).

    Raises:
        ProcessFailed: a port is still taken after ``port_wait_s``, or Milvus exited or did not become
            healthy; the message names the holder, or has Milvus's log tail.
    """

    def start(chosen: MilvusPorts) -> tuple[ManagedProcess, MilvusPorts]:
        process = milvus_process(data_dir, chosen, port_wait_s).start()
        try:
            process.wait_until(lambda: healthy(chosen.health), timeout_s, "healthy")
            secure_root(f"http://127.0.0.1:{chosen.proxy}", Path(data_dir).resolve())
        except BaseException:
            process.stop(timeout_s=5)
            raise
        return process, chosen.kept()

    return start_on_ports(start, ports or MilvusPorts(), "milvus")
