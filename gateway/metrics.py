"""Prometheus metrics of the gateway's RPCs (requests and latency by method and status), its readiness,
and the HTTP endpoint that exposes them with the shared downstream metrics of ``core.metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from core.metrics import BUCKETS

REQUESTS = Counter("t2i_requests_total", "gRPC requests by method and status code", ["method", "code"])
LATENCY = Histogram("t2i_request_seconds", "gRPC request latency by method", ["method"], buckets=BUCKETS)
# Set by gateway.health.ReadinessMonitor on every check (0 until the first one, and from shutdown on).
READY = Gauge("t2i_ready", "1 while the gateway reports SERVING (Triton has both models, Milvus the active collection loaded), else 0")


def serve_metrics(host: str, port: int) -> None:
    """Expose ``/metrics`` over HTTP (port 0 disables it)."""
    if port:
        start_http_server(port, addr=host)
