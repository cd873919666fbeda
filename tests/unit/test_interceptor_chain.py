"""The gateway's interceptors as ``gateway.server.interceptors`` composes them, over real gRPC: telemetry sees every answer,
auth refuses first (on the metadata, before parsing), admission after it, and error mapping sits next to the handler."""

from __future__ import annotations

from pathlib import Path

import grpc
from opentelemetry import trace
from prometheus_client import REGISTRY

from core.auth import HASH_PREFIX, token_hash
from core.settings import GatewaySettings
from gateway.admission import AdmissionInterceptor
from gateway.auth import AuthInterceptor
from gateway.errors import ErrorMappingInterceptor
from gateway.server import authenticator, interceptors
from gateway.telemetry import TelemetryInterceptor
from tests.support.probes import Probe, memory_spans, outcome, probe_channel

PATH = "/text2image.v1.EmbeddingService/EmbedText"  # a read method, capped at T2I_MAX_TEXT_REQUEST_KB x T2I_MAX_BATCH
READ = "t2i_chain-read-secret"
TOKEN = (("authorization", f"Bearer {READ}"),)


def counted(code: str) -> float:
    return REGISTRY.get_sample_value("t2i_requests_total", {"method": "EmbedText", "code": code}) or 0.0


def test_the_order_is_telemetry_auth_admission_error_mapping(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(f"reader read {HASH_PREFIX}{token_hash(READ).hex()}\n")
    settings = GatewaySettings(listen="127.0.0.1:50051", auth="tokens", auth_tokens_file=tmp_path / "tokens")
    kinds = [type(interceptor) for interceptor in interceptors(settings, authenticator(settings))]
    assert kinds == [TelemetryInterceptor, AuthInterceptor, AdmissionInterceptor, ErrorMappingInterceptor]
    open_mode = GatewaySettings(listen="127.0.0.1:50051", auth="open")
    assert [type(interceptor) for interceptor in interceptors(open_mode, authenticator(open_mode))] == [
        TelemetryInterceptor,
        AdmissionInterceptor,
        ErrorMappingInterceptor,
    ]


async def test_every_layer_answers_in_its_turn_and_telemetry_sees_every_answer(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(f"reader read {HASH_PREFIX}{token_hash(READ).hex()}\n")
    settings = GatewaySettings(auth="tokens", auth_tokens_file=tmp_path / "tokens", max_text_request_kb=1, max_batch=1, max_in_flight=1)
    chain = interceptors(settings, authenticator(settings))
    admission = chain[2].admission if isinstance(chain[2], AdmissionInterceptor) else None
    assert admission is not None
    probe = Probe()
    spans = memory_spans()
    codes = ("OK", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT")
    before = {code: counted(code) for code in codes}
    async with probe_channel(chain, probe, PATH) as channel:
        # Auth refuses on the metadata alone, before the body is parsed (these bytes do not parse),
        assert (await outcome(channel, PATH, b"\x0a\x05ab"))[0] == grpc.StatusCode.UNAUTHENTICATED
        # and before admission: an anonymous body over the cap learns nothing of the cap,
        assert (await outcome(channel, PATH, "x" * 2000))[0] == grpc.StatusCode.UNAUTHENTICATED
        # while a caller with a token is refused for its size,
        assert await outcome(channel, PATH, "x" * 2000, TOKEN) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "EmbedText requests are limited to 1024 bytes; this one is 2003 bytes",
        )
        admission.in_flight = 1  # and a full gateway sheds a caller with a token, not an anonymous one.
        assert (await outcome(channel, PATH, "ok"))[0] == grpc.StatusCode.UNAUTHENTICATED
        assert (await outcome(channel, PATH, "ok", TOKEN))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        admission.in_flight = 0
        # Error mapping is next to the handler, behind auth.
        assert await outcome(channel, PATH, "domain:InvalidArgument", TOKEN) == (grpc.StatusCode.INVALID_ARGUMENT, "the probe raised InvalidArgument")
        assert await outcome(channel, PATH, "ok", TOKEN) == (grpc.StatusCode.OK, "")
    assert probe.reached == ["domain:InvalidArgument", "ok"]
    assert admission.in_flight == 0
    # Telemetry is outside them all: every answer is counted and traced with the code the client got.
    assert {code: counted(code) - before[code] for code in codes} == {"OK": 1, "UNAUTHENTICATED": 3, "RESOURCE_EXHAUSTED": 2, "INVALID_ARGUMENT": 1}
    traced = [span for span in spans.get_finished_spans() if span.name == PATH.lstrip("/")]
    assert [span.attributes["rpc.grpc.status_code"] for span in traced if span.attributes] == [16, 16, 8, 16, 8, 3, 0]
    assert all(span.kind == trace.SpanKind.SERVER and span.status.status_code == trace.StatusCode.UNSET for span in traced)
