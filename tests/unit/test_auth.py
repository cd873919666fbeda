"""Tokens, scopes and TLS on a real in-process gRPC server (the gateway's interceptor and certificate reloading)."""

from __future__ import annotations

import contextlib
import logging
import re
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from tritonclient.utils import InferenceServerException

from core.auth import HASH_PREFIX, LocalTokens, TokenFileError, TokenStore, client_token, parse_tokens, token_hash
from core.errors import UserError
from core.settings import GatewaySettings, TlsFiles, redact_uri
from gateway.auth import AuthInterceptor, required_scope
from gateway.server import add_port, authenticator
from gateway.tls import CertificateFiles
from inference.triton_client import triton_client
from tests.support.certs import Authority
from tests.support.servers import real_server

READ, WRITE = "t2i_read-secret", "t2i_write-secret"
TOKENS = f"reader read {HASH_PREFIX}{token_hash(READ).hex()}\nwriter read,write {WRITE}\n"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_file_format_and_its_errors() -> None:
    entries = parse_tokens("# comment\n\nreader read sha256:" + "ab" * 32 + "  # trailing\nwriter read,write plain-token\n")
    assert [(e.name, sorted(e.scopes)) for e in entries] == [("reader", ["read"]), ("writer", ["read", "write"])]
    assert entries[1].digest == token_hash("plain-token")  # a plain token is hashed at once
    for text, fragment in (
        ("reader read", "expected 'NAME SCOPES TOKEN'"),
        ("reader admin tok", "unknown scope ['admin']"),
        ("reader read sha256:zz", "malformed hash"),
        ("a read x\na write y", "the name 'a' is used twice"),
    ):
        with pytest.raises(TokenFileError, match=re.escape(fragment)):
            parse_tokens(text)


def test_store_reloads_on_change_keeps_the_last_good_file_and_supports_rotation(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    clock = Clock()
    store = TokenStore(path, clock)
    reader = store.find(READ)
    assert reader is not None and reader.name == "reader"
    assert store.find("nope") is None
    # Rotation: the new write token is added beside the old one, then the old one removed.
    path.write_text(TOKENS + "writer2 read,write t2i_new\n")
    assert store.find("t2i_new") is None  # checked at most every RELOAD_S
    clock.now += 1.5
    assert store.find("t2i_new") is not None and store.find(WRITE) is not None
    path.write_text(f"writer2 read,write t2i_new\nreader read {HASH_PREFIX}{token_hash(READ).hex()}\n")
    clock.now += 1.5
    assert store.find(WRITE) is None and store.find("t2i_new") is not None
    path.write_text("broken line")  # a bad edit keeps the tokens in force
    clock.now += 1.5
    assert store.find("t2i_new") is not None
    with pytest.raises(TokenFileError, match="does not exist"):
        TokenStore(tmp_path / "missing")


def test_local_tokens_are_private_and_the_server_file_holds_only_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = LocalTokens(tmp_path / "stack" / "auth").ensure()
    for path in (tokens.server_file, tokens.client_file("read"), tokens.client_file("write")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    read, write = tokens.token("read"), tokens.token("write")
    assert read != write and read.startswith("t2i_")
    assert read not in tokens.server_file.read_text() and write not in tokens.server_file.read_text()
    store = TokenStore(tokens.server_file)
    found_read, found_write = store.find(read), store.find(write)
    assert found_read is not None and found_read.scopes == {"read"}
    assert found_write is not None and found_write.scopes == {"read", "write"}
    assert LocalTokens(tmp_path / "stack" / "auth").ensure().token("read") == read  # kept across restarts
    # Where a client finds its token: T2I_TOKEN, then T2I_TOKEN_FILE, then the local stack's.
    monkeypatch.delenv("T2I_TOKEN", raising=False)
    monkeypatch.delenv("T2I_TOKEN_FILE", raising=False)
    assert client_token("write", tmp_path) == write
    assert client_token("read", tmp_path / "elsewhere") is None
    monkeypatch.setenv("T2I_TOKEN_FILE", str(tokens.client_file("read")))
    assert client_token("write", tmp_path) == read
    monkeypatch.setenv("T2I_TOKEN", "from-env")
    assert client_token("write", tmp_path) == "from-env"


@pytest.mark.parametrize(
    ("method", "scope"),
    [
        ("/grpc.health.v1.Health/Check", None),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", None),
        ("/text2image.v1.SearchService/SearchText", "read"),
        ("/text2image.v1.EmbeddingService/EmbedImage", "read"),
        ("/text2image.v1.IndexService/GetIndexInfo", "read"),
        ("/text2image.v1.IndexService/ListLabels", "read"),
        ("/text2image.v1.IndexService/UpsertImages", "write"),
        ("/text2image.v1.IndexService/DeleteImages", "write"),
        ("/text2image.v1.IndexService/SomethingNew", "write"),  # closed by default
    ],
)
def test_required_scope(method: str, scope: str | None) -> None:
    assert required_scope(method) == scope


def _echo(request: bytes, context: Any) -> bytes:
    return request


SERVICES = {"SearchText": "text2image.v1.SearchService", "UpsertImages": "text2image.v1.IndexService"}


def _generic() -> list[grpc.GenericRpcHandler]:
    return [grpc.method_handlers_generic_handler(service, {name: grpc.unary_unary_rpc_method_handler(_echo)}) for name, service in SERVICES.items()]


def server_with(interceptors: list[grpc.aio.ServerInterceptor], settings: GatewaySettings | None = None) -> contextlib.AbstractAsyncContextManager[str]:
    """A real server with echo ``SearchText`` and ``UpsertImages`` methods and health behind ``interceptors``; yields its address."""

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers(_generic())
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)

    return real_server(interceptors, register, settings)


async def call(channel: grpc.aio.Channel, method: str, token: str | None) -> bytes:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    rpc: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{SERVICES[method]}/{method}")
    return await rpc(b"ping", metadata=metadata, timeout=5)


def refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("t2i_auth_refusals_total", {"method": "UpsertImages", "reason": reason}) or 0.0


async def test_tokens_and_scopes_over_real_grpc(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    before = {reason: refusals(reason) for reason in ("missing", "unknown", "scope")}
    async with server_with([AuthInterceptor(TokenStore(path))]) as address, grpc.aio.insecure_channel(address) as channel:
        cases = [
            (None, grpc.StatusCode.UNAUTHENTICATED, "needs a token"),
            ("wrong", grpc.StatusCode.UNAUTHENTICATED, "not recognized"),
            (READ, grpc.StatusCode.PERMISSION_DENIED, "'reader' has no 'write' scope"),
        ]
        for token, code, fragment in cases:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(channel, "UpsertImages", token)
            assert refused.value.code() == code and fragment in (refused.value.details() or "")
        with caplog.at_level(logging.INFO, logger="gateway.auth"):
            assert await call(channel, "UpsertImages", WRITE) == b"ping"
        assert "write UpsertImages by token 'writer'" in caplog.text and WRITE not in caplog.text
        assert await call(channel, "SearchText", READ) == b"ping"
        # Health stays open for probes.
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert {reason: refusals(reason) - before[reason] for reason in before} == {"missing": 1, "unknown": 1, "scope": 1}


def test_open_mode_only_on_loopback_and_tokens_mode_needs_a_file() -> None:
    assert authenticator(GatewaySettings(listen="127.0.0.1:1", auth="open")) is None
    with pytest.raises(UserError, match="allowed only on a loopback listen address"):
        authenticator(GatewaySettings(listen="0.0.0.0:50051", auth="open"))
    with pytest.raises(UserError, match="T2I_AUTH_TOKENS_FILE"):
        authenticator(GatewaySettings(listen="0.0.0.0:50051", auth="tokens", auth_tokens_file=None))


def tls_channel(address: str, ca: Path, client: Any = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    return grpc.aio.secure_channel(address, credentials)


async def test_mutual_tls_refuses_a_wrong_client_certificate(tmp_path: Path) -> None:
    ours, theirs = Authority(tmp_path / "ours"), Authority(tmp_path / "theirs", "another CA")
    server = ours.issue("server", server=True)
    settings = GatewaySettings(listen="127.0.0.1:0", auth="open", tls_cert=server.cert, tls_key=server.key, tls_client_ca=ours.ca)
    async with server_with([], settings) as address:
        async with tls_channel(address, ours.ca, ours.issue("good-client", server=False)) as channel:
            assert await call(channel, "SearchText", None) == b"ping"
        for client in (theirs.issue("stranger", server=False), None):  # signed by another CA, or no certificate at all
            async with tls_channel(address, ours.ca, client) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(channel, "SearchText", None)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(address) as plain:  # plaintext is not served at all
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(plain, "SearchText", None)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_server_certificate_is_reloaded_when_its_files_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.tls.CHECK_S", 0.0)
    first, second = Authority(tmp_path / "first"), Authority(tmp_path / "second", "renewed CA")
    live = first.issue("server", server=True)
    async with server_with([], GatewaySettings(listen="127.0.0.1:0", auth="open", tls_cert=live.cert, tls_key=live.key)) as address:
        async with tls_channel(address, first.ca) as channel:
            assert await call(channel, "SearchText", None) == b"ping"
        renewed = second.issue("server", server=True)
        live.cert.write_bytes(renewed.cert.read_bytes() + b"\n")  # different size: seen as a change
        live.key.write_bytes(renewed.key.read_bytes())
        async with tls_channel(address, second.ca) as channel:  # a new handshake gets the renewed certificate
            assert await call(channel, "SearchText", None) == b"ping"
        async with tls_channel(address, first.ca) as channel:  # the old CA no longer verifies the server
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(channel, "SearchText", None)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_half_a_tls_configuration_is_refused() -> None:
    with pytest.raises(UserError, match="both T2I_TLS_CERT and T2I_TLS_KEY"):
        add_port(grpc.aio.server(), GatewaySettings(listen="127.0.0.1:0", tls_cert=Path("x.crt")))
    with pytest.raises(UserError, match="TLS file missing"):
        CertificateFiles(Path("/nonexistent.crt"), Path("/nonexistent.key"))


async def test_the_triton_client_talks_tls_with_the_configured_ca(tmp_path: Path) -> None:
    """The Triton client's TLS settings, against a TLS server that has no Triton service: a finished
    handshake shows as UNIMPLEMENTED, a refused one as UNAVAILABLE."""
    ours, theirs = Authority(tmp_path / "ours"), Authority(tmp_path / "theirs", "another CA")
    server = ours.issue("server", server=True)

    async def status(address: str, tls: TlsFiles | None) -> str:
        client = triton_client(address, tls)
        try:
            await client.is_server_live(client_timeout=5)
        except InferenceServerException as exc:
            return str(exc.status())
        finally:
            await client.close()
        return "OK"

    async with server_with([], GatewaySettings(listen="127.0.0.1:0", auth="open", tls_cert=server.cert, tls_key=server.key)) as address:
        assert await status(address, TlsFiles(ca=ours.ca)) == "StatusCode.UNIMPLEMENTED"
        assert await status(address, TlsFiles(ca=theirs.ca)) == "StatusCode.UNAVAILABLE"
        assert await status(address, None) == "StatusCode.UNAVAILABLE"  # plaintext to a TLS port


def test_milvus_tls_settings_become_pymilvus_arguments(tmp_path: Path) -> None:
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    assert GatewaySettings().milvus_tls_args() == {}
    assert GatewaySettings(milvus_tls_ca=ca).milvus_tls_args() == {"server_pem_path": str(ca)}
    mutual = GatewaySettings(milvus_tls_ca=ca, milvus_tls_cert=cert, milvus_tls_key=key).milvus_tls_args()
    assert mutual == {"ca_pem_path": str(ca), "client_pem_path": str(cert), "client_key_path": str(key)}
    assert GatewaySettings(triton_tls=False, triton_tls_ca=ca).triton_tls_files() is None
    assert GatewaySettings(triton_tls=True, triton_tls_ca=ca).triton_tls_files() == TlsFiles(ca, None, None)


def test_milvus_credentials_come_from_the_token_the_file_or_the_local_stack(tmp_path: Path) -> None:
    local = tmp_path / "stack" / "milvus" / "root.token"
    local.parent.mkdir(parents=True)
    local.write_text("root:local\n")
    assert GatewaySettings(data_dir=tmp_path).milvus_credentials() == "root:local"  # loopback URI: the local stack's
    assert GatewaySettings(data_dir=tmp_path, milvus_uri="http://milvus.prod:19530").milvus_credentials() == ""  # never sent elsewhere
    secret = tmp_path / "mounted"
    secret.write_text("svc:secret\n")
    assert GatewaySettings(data_dir=tmp_path, milvus_token_file=secret).milvus_credentials() == "svc:secret"
    assert GatewaySettings(data_dir=tmp_path, milvus_token="a:b", milvus_token_file=secret).milvus_credentials() == "a:b"
    assert redact_uri("http://root:pw@127.0.0.1:19530") == "http://127.0.0.1:19530" and redact_uri("http://h:1") == "http://h:1"


def test_where_the_milvus_credentials_come_from_is_named(tmp_path: Path) -> None:
    """What a refused-credentials error names (``CredentialsRefused``)."""
    assert GatewaySettings(data_dir=tmp_path).milvus_credentials_source() == ""  # nothing: no auth
    local = tmp_path / "stack" / "milvus" / "root.token"
    local.parent.mkdir(parents=True)
    local.write_text("root:local\n")
    assert GatewaySettings(data_dir=tmp_path).milvus_credentials_source() == f"the local stack's {local} (T2I_MILVUS_TOKEN_FILE is unset)"
    assert GatewaySettings(data_dir=tmp_path, milvus_uri="http://milvus.prod:19530").milvus_credentials_source() == ""
    assert GatewaySettings(data_dir=tmp_path, milvus_uri="http://u:p@milvus.prod:19530").milvus_credentials_source() == "the user:password of T2I_MILVUS_URI"
    secret = tmp_path / "mounted"
    assert GatewaySettings(data_dir=tmp_path, milvus_token_file=secret).milvus_credentials_source() == f"T2I_MILVUS_TOKEN_FILE ({secret})"
    assert GatewaySettings(data_dir=tmp_path, milvus_token="a:b", milvus_token_file=secret).milvus_credentials_source() == "T2I_MILVUS_TOKEN"
