"""The local stack is closed: tokens on the gateway, Milvus with auth, and nothing listening beyond loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from pymilvus import MilvusClient, MilvusException

from core.errors import Unavailable
from core.settings import TlsFiles
from devstack.sockets import descendants, tree_listeners
from devstack.stack import LocalStack
from devstack.triton import start_triton
from inference.triton_client import RetryPolicy, TritonEncoder
from t2i.client import GatewayClient
from tests.support.certs import Authority
from tests.support.stack import assert_serving
from text2image.v1 import text2image_pb2 as pb


def upsert(stack: LocalStack, token: str | None) -> pb.UpsertImagesResponse:
    client = GatewayClient(stack.gateway_address, timeout_s=20, token=token or "")
    try:
        return client.index.UpsertImages(pb.UpsertImagesRequest(items=[pb.ImageItem(id="security/none", content=b"not an image")]), timeout=20)
    finally:
        client.close()


def test_writes_need_the_write_token(stack: LocalStack) -> None:
    for token, code in (
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("t2i_forged", grpc.StatusCode.UNAUTHENTICATED),
        (stack.token("read"), grpc.StatusCode.PERMISSION_DENIED),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            upsert(stack, token)
        assert refused.value.code() == code, refused.value.details()
    reply = upsert(stack, stack.token("write"))  # accepted: the bad bytes fail that item alone
    assert reply.failed == 1 and "not a recognized image" in reply.results[0].error
    with GatewayClient(stack.gateway_address, timeout_s=20, token="") as anonymous, pytest.raises(grpc.RpcError) as refused:
        anonymous.info()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # reads need a token too
    with GatewayClient(stack.gateway_address, timeout_s=20, token=stack.token("read")) as reader:
        assert reader.info().alias == stack.alias
    assert_serving(stack)


def test_milvus_refuses_clients_without_the_generated_password(stack: LocalStack) -> None:
    def list_with(token: str) -> None:
        MilvusClient(uri=stack.milvus_uri, token=token, timeout=10).list_collections()

    # No credentials: the server drops the connection, which pymilvus words like an outage (the client below shows it is up).
    with pytest.raises(MilvusException, match="illegal connection params"):
        list_with("")
    # The default root password: UNAUTHENTICATED, raised as it is, or wrapped in pymilvus's connection error
    # (which it does depends on the client's cached connection); the product reads it through the chain.
    with pytest.raises((grpc.RpcError, MilvusException)) as refused:
        list_with("root:Milvus")
    chain: list[BaseException] = []
    current: BaseException | None = refused.value
    while current is not None and all(current is not link for link in chain):  # grpc's errors chain back to themselves
        chain.append(current)
        current = current.__cause__ or current.__context__
    codes = [link.code() for link in chain if isinstance(link, grpc.RpcError)]
    assert grpc.StatusCode.UNAUTHENTICATED in codes, repr(refused.value)
    client = MilvusClient(uri=stack.milvus_uri, token=stack.milvus_token, timeout=10)
    assert isinstance(client.list_collections(), list)
    client.close()
    assert oct((stack.data_dir / "milvus" / "root.token").stat().st_mode & 0o777) == "0o600"


def test_no_socket_of_the_stack_listens_beyond_loopback(stack: LocalStack) -> None:
    processes = {"milvus": stack.milvus, "triton": stack.triton, "gateway": stack.gateway}
    found = {}
    for name, process in processes.items():
        assert process is not None and process.pid is not None
        found[name] = tree_listeners(process.pid)
    assert all(found.values()), found  # each one listens somewhere: the check sees real sockets
    open_to_the_network = {name: [f"{s.host}:{s.port}" for s in sockets if not s.loopback] for name, sockets in found.items()}
    assert open_to_the_network == {name: [] for name in processes}
    # Milvus's own ports live in a network namespace of their own: only the proxy and health
    # ports reach the host, through the sockets the launcher bound on 127.0.0.1.
    assert stack.milvus is not None and stack.milvus.pid is not None and stack.milvus_ports is not None
    assert sorted(s.port for s in found["milvus"]) == sorted([stack.milvus_ports.proxy, stack.milvus_ports.health])
    namespaces = {os.readlink(f"/proc/{pid}/ns/net") for pid in descendants(stack.milvus.pid)}
    assert os.readlink("/proc/self/ns/net") not in namespaces


async def test_the_triton_client_over_a_real_triton_serving_tls(tiny_repo: Path, tmp_path: Path) -> None:
    """``T2I_TRITON_TLS*`` against the real Triton with ``--grpc-use-ssl``: encodes with the CA, fails without TLS."""
    authority = Authority(tmp_path / "ca")
    server = authority.issue("triton", server=True)
    tls_args = ("--grpc-use-ssl=true", f"--grpc-server-cert={server.cert}", f"--grpc-server-key={server.key}")
    triton, ports = start_triton(tiny_repo, tmp_path / "triton", extra_args=tls_args)
    url, policy = f"127.0.0.1:{ports.grpc}", RetryPolicy(timeout_s=10, attempts=1)
    try:
        secure = TritonEncoder(url, tiny_repo, policy, tls=TlsFiles(ca=authority.ca))
        vectors, _ = await secure.encode_texts(["a red car"])
        assert vectors.shape[0] == 1 and abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-4
        await secure.close()
        plain = TritonEncoder(url, tiny_repo, policy)
        with pytest.raises(Unavailable, match="Triton"):
            await plain.encode_texts(["a red car"])
        await plain.close()
    finally:
        triton.stop()


def test_a_second_gateway_cannot_share_the_port(stack: LocalStack) -> None:
    """grpc sets SO_REUSEPORT by default: two gateways on one port would split the connections (a stale one kept answering)."""
    env = {**os.environ, **stack.env(), "T2I_METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"}
    second = subprocess.run([sys.executable, "-m", "gateway.server"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"cannot listen on {stack.gateway_address}" in second.stderr
    assert_serving(stack)
