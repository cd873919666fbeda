"""The span tree of one RPC, over a real gRPC server with the in-memory exporter, and the trace context passed on to Triton."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.filters import SearchFilter
from gateway.errors import ErrorMappingInterceptor
from gateway.servicers import SearchServicer
from gateway.telemetry import TelemetryInterceptor
from search.engine import UpsertItem
from tests.support.engine import Parts
from tests.support.images import png
from tests.support.probes import memory_spans
from text2image.v1 import text2image_pb2 as pb
from text2image.v1 import text2image_pb2_grpc as pb_grpc

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """Spans of this process, kept in memory (the global provider can be set once per process: ``memory_spans`` shares it)."""
    return memory_spans()


def tree(spans: tuple[ReadableSpan, ...], root: ReadableSpan, depth: int = 0) -> list[str]:
    """``root`` and its descendants, indented by depth, in start order."""
    lines = ["  " * depth + root.name]
    children = sorted(
        (s for s in spans if s.parent is not None and root.context is not None and s.parent.span_id == root.context.span_id), key=lambda s: s.start_time or 0
    )
    for child in children:
        lines += tree(spans, child, depth + 1)
    return lines


async def test_one_rpc_is_one_trace_with_a_span_per_step(exporter: InMemorySpanExporter, model_repo: Path) -> None:
    parts = Parts(model_repo)
    await parts.engine.upsert([UpsertItem("red", png(), "mem://red", ())], None)
    await parts.engine.search_text("warm the alias cache", 5, SearchFilter(), None, None)
    exporter.clear()
    server = grpc.aio.server(interceptors=[TelemetryInterceptor(), ErrorMappingInterceptor()])
    pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(parts.engine, 10), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            metadata = (("traceparent", f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"),)
            await pb_grpc.SearchServiceStub(channel).SearchText(pb.SearchTextRequest(query="a red square", top_k=3), metadata=metadata, timeout=10)
    finally:
        await server.stop(None)
        await parts.engine.close()
    spans = exporter.get_finished_spans()
    root = next(s for s in spans if s.name == "text2image.v1.SearchService/SearchText")
    assert root.kind == trace.SpanKind.SERVER and root.context is not None
    assert f"{root.context.trace_id:032x}" == CLIENT_TRACE  # the client's trace continues in the gateway
    assert root.attributes is not None and root.attributes["rpc.method"] == "SearchText" and root.attributes["rpc.grpc.status_code"] == 0
    assert tree(spans, root) == [
        "text2image.v1.SearchService/SearchText",
        "  triton encode_text",
        "    tokenize",
        "  milvus search",
    ]
    # ... and goes on to Triton in the infer call's metadata.
    assert parts.triton.headers[-1]["traceparent"].split("-")[1] == CLIENT_TRACE


async def test_decoding_has_its_own_span(exporter: InMemorySpanExporter, model_repo: Path) -> None:
    parts = Parts(model_repo)
    exporter.clear()
    with trace.get_tracer("test").start_as_current_span("upsert"):
        await parts.engine.upsert([UpsertItem("red", png(), "mem://red", ())], None)
    await parts.engine.close()
    names = [s.name for s in exporter.get_finished_spans()]
    assert "decode" in names and "milvus upsert" in names
