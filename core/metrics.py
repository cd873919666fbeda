"""Prometheus metrics shared by every component: the latency of calls to Triton and Milvus.

The gateway exposes them on its metrics port; a batch job may expose or ignore them. Each timed
call is also a tracing span (``triton encode_text``, ``milvus search``...).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Histogram

from core.tracing import span

BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

DOWNSTREAM = Histogram("t2i_downstream_seconds", "Latency of calls to Triton and Milvus", ["target", "operation", "outcome"], buckets=BUCKETS)


@contextmanager
def downstream(target: str, operation: str) -> Iterator[None]:
    """Time one call to ``target`` (``triton`` or ``milvus``), labelled by outcome, in a span of its own."""
    start = time.perf_counter()
    outcome = "error"
    try:
        with span(f"{target} {operation}", **{"peer.service": target}):
            yield
        outcome = "ok"
    finally:
        DOWNSTREAM.labels(target, operation, outcome).observe(time.perf_counter() - start)
