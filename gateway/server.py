"""The gateway's entry point: ``python -m gateway.server`` or ``t2i serve``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from core.auth import TokenStore
from core.errors import UserError
from core.filters import MAX_FILTER_IDS, MAX_FILTER_LABELS, MAX_VALUE_BYTES
from core.listen import bound_address, report_bound
from core.logs import configure_logging
from core.records import MAX_ID_BYTES, MAX_LABEL_BYTES
from core.settings import GatewaySettings, add_flags, from_flags, redact_uri, split_address
from core.tracing import configure as configure_tracing
from gateway.admission import Admission, AdmissionInterceptor
from gateway.auth import AuthInterceptor
from gateway.errors import ErrorMappingInterceptor
from gateway.health import SERVICE_NAMES, ReadinessMonitor, not_serving_yet
from gateway.metrics import serve_metrics
from gateway.servicers import EmbeddingServicer, IndexServicer, SearchServicer
from gateway.telemetry import TelemetryInterceptor
from gateway.tls import CertificateFiles
from gateway.warmup import WarmUp
from search.engine import SearchEngine, engine_from_settings
from text2image.v1 import text2image_pb2 as pb
from text2image.v1 import text2image_pb2_grpc as pb_grpc

logger = logging.getLogger("gateway.server")  # not __name__: run as __main__, its lines would miss the project's log level

DEFAULT_LOG_LEVEL = "INFO"


def largest_search_text(query_bytes: int) -> int:
    """The serialized size of the largest ``SearchTextRequest`` that the field limits allow.

    A query of ``query_bytes`` and a filter at every limit of ``core.filters`` (ids, labels and
    uri_prefix at their most and longest), with the longest encoding of every number.
    """
    labels = pb.LabelFilter(any_of=["x" * MAX_LABEL_BYTES] * MAX_FILTER_LABELS)
    largest = pb.Filter(labels=labels, ids=["x" * MAX_ID_BYTES] * MAX_FILTER_IDS, uri_prefix="x" * MAX_VALUE_BYTES)
    return pb.SearchTextRequest(query="x" * query_bytes, top_k=-1, filter=largest, min_score=-1.0).ByteSize()


def request_caps(settings: GatewaySettings) -> dict[str, int]:
    """Serialized size limits by method, checked before parsing: text requests cost CPU by their size.

    ``SearchText`` gets what its fields may hold (``largest_search_text``: a query of
    ``T2I_MAX_TEXT_REQUEST_KB`` and a filter at its limits, about 5.6 MiB); each field is then checked
    against its own limit after parsing. ``EmbedText`` gets ``T2I_MAX_TEXT_REQUEST_KB`` × ``T2I_MAX_BATCH``.
    Image methods are bounded by ``T2I_MAX_MESSAGE_MB`` (the server's receive limit) and the image limits.
    """
    text = settings.max_text_request_kb * 1024
    return {"SearchText": largest_search_text(text), "EmbedText": text * settings.max_batch}


def is_loopback(listen: str) -> bool:
    """True when ``listen`` accepts connections from this machine only."""
    host, _ = split_address(listen, default_host="")
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def authenticator(settings: GatewaySettings) -> AuthInterceptor | None:
    """The auth interceptor of ``settings``, or None in open mode.

    Raises:
        UserError: no token file in token mode, or open mode on an address beyond loopback.
    """
    if settings.auth == "open":
        if not is_loopback(settings.listen):
            raise UserError(
                f"T2I_AUTH=open lets anyone write and delete; it is allowed only on a loopback listen address, not {settings.listen}. "
                "Give the gateway a token file (T2I_AUTH_TOKENS_FILE) instead"
            )
        logger.warning("T2I_AUTH=open: no token is checked (loopback only, for development)")
        return None
    if settings.auth_tokens_file is None:
        raise UserError(
            "the gateway needs tokens: set T2I_AUTH_TOKENS_FILE to a file of 'NAME SCOPES sha256:HASH' lines "
            "('t2i up' makes one), or T2I_AUTH=open for a development gateway on loopback"
        )
    store = TokenStore(settings.auth_tokens_file)
    logger.info("tokens from %s: %s", settings.auth_tokens_file, ", ".join(store.names))
    return AuthInterceptor(store)


def interceptors(settings: GatewaySettings, auth: AuthInterceptor | None = None) -> list[grpc.aio.ServerInterceptor]:
    """The gateway's interceptors, one job each, outermost first: every RPC passes them in this order.

    1. Telemetry (``gateway.telemetry``): the RPC's span and its ``t2i_requests_total`` and
       ``t2i_request_seconds``. Outermost, so that every answer is traced and counted with the
       code the client got, the refusals of the layers below included.
    2. Auth (``gateway.auth``, None in open mode): the bearer token and its scope, from the
       metadata alone; a refused request is never parsed. Before admission, so that a caller
       without a valid token learns nothing of the caps or the load, is never counted as shed,
       and cannot raise the server-fault ratio with short deadlines (``T2IErrorRatioHigh``).
    3. Admission (``gateway.admission``): load shedding, the size caps and the parse guard, in
       one wrapper of the request deserializer (before the body is parsed), and the deadline
       check before the call.
    4. Error mapping (``gateway.errors``): the servicers' domain errors to their status codes,
       anything else to INTERNAL with an incident id. Innermost, next to the servicers; the
       layers above answer their own refusals.
    """
    return [
        TelemetryInterceptor(),
        *([auth] if auth else []),
        AdmissionInterceptor(request_caps(settings), Admission(settings.max_in_flight)),
        ErrorMappingInterceptor(),
    ]


def add_port(server: grpc.aio.Server, settings: GatewaySettings) -> tuple[str, int]:
    """Listen on ``settings.listen``, over TLS when a certificate is set; returns the mode and the port bound.

    The mode is 'TLS', 'mutual TLS' or 'plaintext'. Port 0 in ``settings.listen`` binds any free
    port: the one returned is the real one (``core.listen``).

    Raises:
        UserError: half a TLS configuration, or the address cannot be bound.
    """
    if bool(settings.tls_cert) != bool(settings.tls_key) or (settings.tls_client_ca and not settings.tls_cert):
        raise UserError("TLS needs both T2I_TLS_CERT and T2I_TLS_KEY (and T2I_TLS_CLIENT_CA only with them)")
    try:
        if settings.tls_cert and settings.tls_key:
            files = CertificateFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
            bound, mode = server.add_secure_port(settings.listen, files.credentials()), "mutual TLS" if files.mutual else "TLS"
        else:
            bound, mode = server.add_insecure_port(settings.listen), "plaintext"
    except RuntimeError:  # grpc raises "Failed to bind" rather than returning 0 for a taken port
        bound = 0
    if bound == 0:
        raise UserError(f"cannot listen on {settings.listen}: the address is taken or not this machine's")
    return mode, bound


def build_server(settings: GatewaySettings, engine: SearchEngine, auth: AuthInterceptor | None) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """The gRPC server with the interceptors, the three services, health and reflection; not listening yet."""
    max_bytes = settings.max_message_mb * 2**20
    server = grpc.aio.server(
        interceptors=interceptors(settings, auth),
        # A backstop for floods of any method (health and reflection included), well above the shedding bound.
        maximum_concurrent_rpcs=settings.max_in_flight * 4 + 16,
        options=[
            # Never share the port with another process (grpc sets SO_REUSEPORT by default): a stale
            # gateway left on the port would otherwise keep answering half the connections.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            # A client re-resolves DNS only when a connection closes: without an age limit, pods added by
            # the HPA would never get traffic from long-lived round-robin channels.
            *([("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000))] if settings.max_connection_age_s else []),
            ("grpc.max_connection_age_grace_ms", int(settings.grace_s * 1000)),
        ],
    )
    pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(engine, settings.request_timeout_s), server)
    pb_grpc.add_EmbeddingServiceServicer_to_server(EmbeddingServicer(engine, settings.request_timeout_s), server)
    pb_grpc.add_IndexServiceServicer_to_server(IndexServicer(engine, settings.request_timeout_s), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    return server, health_servicer


async def until_signalled() -> None:
    """Return on the first SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(settings: GatewaySettings) -> None:
    """Run the gateway until SIGTERM or SIGINT, then drain and stop."""
    auth = authenticator(settings)
    tracing = configure_tracing("t2i-gateway", settings.otlp_endpoint)
    engine = engine_from_settings(settings)
    server, health_servicer = build_server(settings, engine, auth)
    mode, port = add_port(server, settings)
    address = bound_address(settings.listen, port)
    host, _ = split_address(settings.listen)
    serve_metrics(host, settings.metrics_port)
    engine.start()  # the catalog rescans the model repository in a task of its own; engine.close() stops it
    await not_serving_yet(health_servicer)  # until the first check (and the warm-up before it) says otherwise
    await server.start()
    logger.info(
        "gateway listening on %s (%s, %s; metrics on %s:%s), models %s, Triton %s, Milvus %s",
        address,
        mode,
        "open" if auth is None else "tokens",
        host,
        settings.metrics_port,
        ", ".join(stamp.model_id for stamp in engine.models.stamps),
        settings.triton_url,
        redact_uri(settings.milvus_uri),
    )
    report_bound(address)  # after the log line: a launcher that reads the port file finds the line in the log too
    monitor_task = asyncio.create_task(ReadinessMonitor(engine, health_servicer, settings.health_interval_s, WarmUp(engine, settings.warmup_s)).run())
    await until_signalled()
    logger.info("shutting down: draining for up to %.1f s", settings.grace_s)
    monitor_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await monitor_task
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.grace_s)
    await engine.close()
    shutdown = getattr(trace.get_tracer_provider(), "shutdown", None)  # the SDK's provider has it, the API's not
    if tracing and callable(shutdown):
        shutdown()  # flush the last spans
    logger.info("gateway stopped")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (``--triton-url`` for ``T2I_TRITON_URL``, and so on)."""
    add_flags(parser, GatewaySettings)


def run(args: argparse.Namespace, log_level: str | None = None) -> int:
    """Run the gateway from parsed flags with JSON-line logs (``t2i serve`` and ``python -m gateway.server``)."""
    settings = from_flags(GatewaySettings, args)
    configure_logging(log_level or DEFAULT_LOG_LEVEL, structured=True)
    try:
        asyncio.run(serve(settings))
    except UserError as exc:
        logger.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse configuration and run the server."""
    parser = argparse.ArgumentParser(prog="gateway", description="text2image gRPC gateway")
    add_arguments(parser)
    parser.add_argument("--log-level", default=DEFAULT_LOG_LEVEL, help="log level of the project's loggers")
    args = parser.parse_args(argv)
    return run(args, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
