"""Channels to the gateways: the target, round robin and retries (the service config), TLS and the token."""

from __future__ import annotations

import collections
import ipaddress
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

MAX_MESSAGE = 64 * 2**20
SERVICES = ("text2image.v1.SearchService", "text2image.v1.EmbeddingService", "text2image.v1.IndexService")
# Balance per request over every address the target resolves to, and retry a request that a
# gateway going away answered with UNAVAILABLE on another one. Every RPC is safe to retry: writes
# are upserts and deletes by id.
SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": service} for service in SERVICES],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


def channel_options(attempts: int = 4) -> list[tuple[str, Any]]:
    """Message sizes of 64 MiB, round robin, and ``attempts`` tries (1..5; gRPC caps them at 5) on UNAVAILABLE."""
    if not 1 <= attempts <= 5:
        raise ValueError(f"attempts must be between 1 and 5 (gRPC's cap); got {attempts}")
    config = json.loads(json.dumps(SERVICE_CONFIG))
    if attempts == 1:
        del config["methodConfig"][0]["retryPolicy"]
    else:
        config["methodConfig"][0]["retryPolicy"]["maxAttempts"] = attempts
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.service_config", json.dumps(config)),
        ("grpc.enable_retries", 1 if attempts > 1 else 0),
    ]


CHANNEL_OPTIONS = channel_options()


def target(address: str | Sequence[str]) -> str:
    """One gRPC target for ``address``: a target string as it is, or a list of ``ip:port`` gateways.

    A string may be any gRPC target: ``host:port``, ``ipv4:10.0.0.1:50051,10.0.0.2:50051``, or
    ``dns:///gateway-headless.ns.svc:50051`` (a name that resolves to every gateway). A list is joined
    into an ``ipv4:`` (or ``ipv6:``) target, so its entries must be IP addresses; for host names, give
    one ``dns:///`` name that resolves to all of them.
    """
    if isinstance(address, str):
        if not address:
            raise ValueError("the gateway address is empty; give host:port")
        return address
    addresses = list(address)
    if not addresses:
        raise ValueError("no gateway address given")
    if len(addresses) == 1:
        return addresses[0]
    versions = set()
    for entry in addresses:
        host, _, port = entry.rpartition(":")
        try:
            versions.add(ipaddress.ip_address(host.strip("[]")).version)
        except ValueError:
            raise ValueError(
                f"{entry!r}: several gateways are given as ip:port ([v6]:port); for host names give one dns:/// target that resolves to all of them"
            ) from None
        if not port.isdigit():
            raise ValueError(f"{entry!r}: no port (host:port)")
    if len(versions) > 1:
        raise ValueError(f"{addresses}: IPv4 and IPv6 addresses cannot share one target; give one family")
    return f"ipv{versions.pop()}:" + ",".join(addresses)


@dataclass(frozen=True)
class Tls:
    """TLS to the gateways: the CA that signed their certificate (``None``: the system's roots), and a client
    certificate and key for mutual TLS. ``server_name`` checks the certificate for that name instead of the target's host.
    """

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("mutual TLS needs both the client certificate chain and its private key")

    @classmethod
    def from_files(cls, ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None, server_name: str | None = None) -> Tls:
        """Read the PEM files: ``ca`` (the gateways' CA), ``cert`` and ``key`` (a client certificate, for mutual TLS)."""

        def read(path: str | Path | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return cls(read(ca), read(cert), read(key), server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials."""
        return grpc.ssl_channel_credentials(root_certificates=self.root_certificates, private_key=self.private_key, certificate_chain=self.certificate_chain)

    def options(self) -> list[tuple[str, Any]]:
        """``grpc.ssl_target_name_override`` when ``server_name`` is set."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


def _with_header(metadata: Any, header: tuple[str, str]) -> list[tuple[str, str | bytes]]:
    return [*(tuple(item) for item in (metadata or ())), header]


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call of a blocking channel."""

    def __init__(self, token: str):
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = _with_header(details.metadata, self.header)
        return _CallDetails(details.method, details.timeout, metadata, details.credentials, details.wait_for_ready, getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)


def _aio_details(details: grpc.aio.ClientCallDetails, header: tuple[str, str]) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*_with_header(details.metadata, header))
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials, details.wait_for_ready)


class AioBearerUnary(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the bearer token to every unary call of an asyncio channel."""

    def __init__(self, token: str):
        self.header = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self.header), request)


class AioBearerStream(grpc.aio.UnaryStreamClientInterceptor):
    """Adds the bearer token to every server-streaming call of an asyncio channel."""

    def __init__(self, token: str):
        self.header = ("authorization", f"Bearer {token}")

    async def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self.header), request)


def open_channel(
    address: str | Sequence[str], token: str | None = None, tls: Tls | None = None, options: Sequence[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """A blocking channel to the gateways with ``token`` on every call, over TLS when ``tls`` is given."""
    every = [*(options if options is not None else CHANNEL_OPTIONS), *(tls.options() if tls else [])]
    where = target(address)
    channel = grpc.secure_channel(where, tls.credentials(), options=every) if tls else grpc.insecure_channel(where, options=every)
    return grpc.intercept_channel(channel, BearerToken(token)) if token else channel


def open_aio_channel(
    address: str | Sequence[str], token: str | None = None, tls: Tls | None = None, options: Sequence[tuple[str, Any]] | None = None
) -> grpc.aio.Channel:
    """An asyncio channel to the gateways with ``token`` on every call, over TLS when ``tls`` is given."""
    every = [*(options if options is not None else CHANNEL_OPTIONS), *(tls.options() if tls else [])]
    interceptors: list[grpc.aio.ClientInterceptor] = [AioBearerUnary(token), AioBearerStream(token)] if token else []
    where = target(address)
    if tls:
        return grpc.aio.secure_channel(where, tls.credentials(), options=every, interceptors=interceptors)
    return grpc.aio.insecure_channel(where, options=every, interceptors=interceptors)
