"""A bounded closed-loop load generator: C threads each send requests back to back."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LoadResult:
    """Latency percentiles (ms) and throughput of one load level."""

    concurrency: int
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    qps: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def run_load(call: Callable[[int], object], concurrency: int, requests: int, time_limit_s: float = 120.0) -> LoadResult:
    """Send ``requests`` calls (``call(i)``) from ``concurrency`` threads; stops early at ``time_limit_s``."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(requests))
    stop_at = time.monotonic() + time_limit_s

    def worker() -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            start = time.perf_counter()
            try:
                call(index)
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    latencies.append(elapsed)
            except Exception:  # noqa: BLE001 - counted, not fatal
                with lock:
                    errors += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    wall = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall
    values = np.asarray(latencies or [float("nan")])
    return LoadResult(
        concurrency,
        len(latencies),
        errors,
        float(np.percentile(values, 50)),
        float(np.percentile(values, 95)),
        float(np.percentile(values, 99)),
        len(latencies) / wall if wall else 0.0,
    )


class HttpJsonClient:
    """One keep-alive HTTP connection per thread, for the baseline's JSON endpoint."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.local = threading.local()

    def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
        except Exception:
            conn.close()  # a failed request leaves http.client unable to send again
            self.local.conn = None
            raise
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
        return json.loads(payload)


def sweep(call: Callable[[int], None], levels: Sequence[int], requests_per_level: Callable[[int], int]) -> list[LoadResult]:
    """``run_load`` at each concurrency level."""
    return [run_load(call, level, requests_per_level(level)) for level in levels]
