"""The Triton adapter retries only retryable codes, inside the caller's deadline.

A fake client raises the real ``InferenceServerException`` objects tritonclient raises; the clock
and the pause between attempts are injected, so nothing sleeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from core.errors import DeadlineExceeded, InvalidArgument, Unavailable
from inference.triton_client import RetryPolicy, TritonEncoder, status_of
from tests.unit.fake_triton import FakeResult, FakeTritonClient

PIXELS = np.zeros((1, 3, 4, 4), dtype=np.float32)


class Clock:
    """A monotonic clock that moves only when the encoder pauses."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def encoder(repo: Path, failures: list[str], policy: RetryPolicy) -> tuple[TritonEncoder, FakeTritonClient, Clock]:
    fake, clock = FakeTritonClient(failures), Clock()
    return TritonEncoder("fake:1", repo, policy, client=fake, clock=clock, sleep=clock.sleep), fake, clock


def test_status_codes_are_read_from_the_exception() -> None:
    assert status_of(InferenceServerException("x", status="StatusCode.UNAVAILABLE")) is grpc.StatusCode.UNAVAILABLE
    assert status_of(InferenceServerException("x", status="StatusCode.DEADLINE_EXCEEDED")) is grpc.StatusCode.DEADLINE_EXCEEDED
    assert status_of(InferenceServerException("x", status="400")) is None  # an HTTP status, not gRPC


async def test_retries_unavailable_then_succeeds_and_normalizes(model_repo: Path) -> None:
    enc, fake, clock = encoder(model_repo, ["StatusCode.UNAVAILABLE", "StatusCode.UNAVAILABLE"], RetryPolicy(backoff_s=0.05))
    vectors = await enc.encode_pixels(PIXELS)
    assert fake.calls == 3
    assert clock.pauses == [0.05, 0.1]  # exponential backoff
    np.testing.assert_allclose(vectors, [[0.6, 0.8]], rtol=1e-6)


async def test_gives_up_after_attempts_with_unavailable(model_repo: Path) -> None:
    enc, fake, _ = encoder(model_repo, ["StatusCode.UNAVAILABLE"] * 10, RetryPolicy(attempts=3, backoff_s=0.001))
    with pytest.raises(Unavailable, match="UNAVAILABLE"):
        await enc.encode_pixels(PIXELS)
    assert fake.calls == 3


async def test_backoff_is_capped(model_repo: Path) -> None:
    enc, _, clock = encoder(model_repo, ["StatusCode.RESOURCE_EXHAUSTED"] * 5, RetryPolicy(attempts=6, backoff_s=0.4, max_backoff_s=1.0))
    await enc.encode_pixels(PIXELS)
    assert clock.pauses == [0.4, 0.8, 1.0, 1.0, 1.0]


async def test_does_not_retry_invalid_argument(model_repo: Path) -> None:
    enc, fake, _ = encoder(model_repo, ["StatusCode.INVALID_ARGUMENT"], RetryPolicy(backoff_s=0.001))
    with pytest.raises(InvalidArgument):
        await enc.encode_pixels(PIXELS)
    assert fake.calls == 1


async def test_does_not_retry_internal(model_repo: Path) -> None:
    enc, fake, _ = encoder(model_repo, ["StatusCode.INTERNAL", "StatusCode.INTERNAL"], RetryPolicy(backoff_s=0.001))
    with pytest.raises(Unavailable, match="INTERNAL"):
        await enc.encode_pixels(PIXELS)
    assert fake.calls == 1


async def test_passed_deadline_is_not_attempted(model_repo: Path) -> None:
    enc, fake, clock = encoder(model_repo, [], RetryPolicy())
    with pytest.raises(DeadlineExceeded):
        await enc.encode_pixels(PIXELS, deadline=clock() - 1)
    assert fake.calls == 0


async def test_attempt_timeout_is_cut_to_the_deadline(model_repo: Path) -> None:
    enc, fake, clock = encoder(model_repo, [], RetryPolicy(timeout_s=5.0))
    await enc.encode_pixels(PIXELS, deadline=clock() + 0.25)
    assert fake.timeouts == [0.25]


async def test_backoff_stops_at_deadline(model_repo: Path) -> None:
    enc, fake, clock = encoder(model_repo, ["StatusCode.UNAVAILABLE"] * 10, RetryPolicy(attempts=10, backoff_s=5.0))
    with pytest.raises(Unavailable):
        await enc.encode_pixels(PIXELS, deadline=clock() + 1.0)
    assert fake.calls == 1 and clock.pauses == []  # the 5 s pause would overrun the 1 s deadline


async def test_timeout_at_the_callers_deadline_is_deadline_exceeded(model_repo: Path) -> None:
    enc, fake, clock = encoder(model_repo, ["StatusCode.DEADLINE_EXCEEDED"], RetryPolicy())
    deadline = clock() + 0.5
    answer = fake.infer

    async def slow_infer(*args: Any, **kwargs: Any) -> FakeResult:
        clock.now = deadline  # the call used up the time that was left
        return await answer(*args, **kwargs)

    fake.infer = slow_infer  # type: ignore[method-assign]  # the fake's own method, wrapped to take time
    with pytest.raises(DeadlineExceeded):
        await enc.encode_pixels(PIXELS, deadline=deadline)


async def test_timeout_before_the_callers_deadline_is_unavailable(model_repo: Path) -> None:
    enc, _, clock = encoder(model_repo, ["StatusCode.DEADLINE_EXCEEDED"], RetryPolicy(timeout_s=1.0))
    with pytest.raises(Unavailable, match="DEADLINE_EXCEEDED"):  # Triton took longer than one call may
        await enc.encode_pixels(PIXELS, deadline=clock() + 30)
