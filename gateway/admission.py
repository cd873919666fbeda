"""Load shedding: a bound on the requests in flight, and refusing requests whose deadline cannot be met.

A gateway that queues without bound answers everyone late: at 256 clients every request waited
about a second, and clients with short deadlines got DEADLINE_EXCEEDED after the server had done
the work anyway. Here a request beyond ``max_in_flight`` is refused at once with
RESOURCE_EXHAUSTED and a retry hint (also in the ``grpc-retry-pushback-ms`` trailer), before its
body is parsed; the accepted ones keep a latency bounded by the limit. A request whose deadline
leaves less than half of what the method usually takes is refused with DEADLINE_EXCEEDED before
it costs work. Health and reflection are never shed.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge

from core.errors import DeadlineExceeded, ResourceExhausted

logger = logging.getLogger(__name__)

SHED = Counter("t2i_shed_total", "Requests refused before any work, by method and reason (busy, deadline)", ["method", "reason"])
IN_FLIGHT = Gauge("t2i_in_flight_requests", "Requests being served now")

SMOOTHING = 0.1  # weight of the newest latency in the moving average
MIN_HINT_MS = 10


class Overloaded(ResourceExhausted):
    """The gateway is full; ``retry_ms`` is how long to wait before trying again."""

    def __init__(self, message: str, retry_ms: int):
        super().__init__(message)
        self.retry_ms = retry_ms


class Admission:
    """Counts the requests in flight and keeps a moving average of each method's latency."""

    def __init__(self, max_in_flight: int):
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.latency_s: dict[str, float] = {}

    @property
    def full(self) -> bool:
        """True when no request can be taken now."""
        return self.in_flight >= self.max_in_flight

    def busy(self, method: str) -> Overloaded:
        """The refusal for a request that finds the gateway full (counted)."""
        SHED.labels(method, "busy").inc()
        hint = self.retry_hint_ms(method)
        return Overloaded(
            f"the gateway is at its limit of {self.max_in_flight} requests in flight; retry in about {hint} ms with backoff, or on another replica", hint
        )

    def retry_hint_ms(self, method: str) -> int:
        """How long a refused client should wait: about one request's time at this load."""
        return max(MIN_HINT_MS, round(self.latency_s.get(method, 0.0) * 1000))

    def admit(self, method: str, remaining_s: float | None) -> None:
        """Take a slot for a request with ``remaining_s`` left of its deadline.

        Raises:
            Overloaded: the gateway is full (a ``ResourceExhausted``).
            DeadlineExceeded: the deadline leaves less than half of the method's usual latency.
        """
        if self.full:
            raise self.busy(method)
        usual = self.latency_s.get(method)
        if remaining_s is not None and usual is not None and remaining_s < usual / 2:
            SHED.labels(method, "deadline").inc()
            raise DeadlineExceeded(f"the deadline leaves {remaining_s * 1000:.0f} ms; {method} takes about {usual * 1000:.0f} ms here, so it was not started")
        self.in_flight += 1
        IN_FLIGHT.set(self.in_flight)

    def release(self, method: str, seconds: float, ok: bool) -> None:
        """Free the slot; a successful request's latency feeds the method's average."""
        self.in_flight -= 1
        IN_FLIGHT.set(self.in_flight)
        if ok:
            previous = self.latency_s.get(method)
            self.latency_s[method] = seconds if previous is None else previous + SMOOTHING * (seconds - previous)
