"""Prometheus metrics of the gateway: requests, latency and errors by RPC and status, and the
latency of the downstream calls to Triton and Milvus."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram, start_http_server

_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

REQUESTS = Counter("t2i_requests_total", "gRPC requests by method and status code", ["method", "code"])
LATENCY = Histogram("t2i_request_seconds", "gRPC request latency by method", ["method"], buckets=_BUCKETS)
DOWNSTREAM = Histogram("t2i_downstream_seconds", "Latency of calls to Triton and Milvus", ["target", "operation", "outcome"], buckets=_BUCKETS)


@contextmanager
def downstream(target: str, operation: str) -> Iterator[None]:
    """Time one call to ``target`` (``triton`` or ``milvus``), labelled by outcome."""
    start = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        DOWNSTREAM.labels(target, operation, outcome).observe(time.perf_counter() - start)


def serve_metrics(host: str, port: int) -> None:
    """Expose ``/metrics`` over HTTP (port 0 disables it)."""
    if port:
        start_http_server(port, addr=host)
