"""The Triton adapter retries only retryable codes, inside the caller's deadline (fake client)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from inference.errors import DeadlineExceeded, InvalidArgument, Unavailable
from inference.triton_client import RetryPolicy, TritonEncoder


class FakeResult:
    def as_numpy(self, name: str) -> np.ndarray:
        return np.array([[3.0, 4.0]], dtype=np.float32)


class FakeClient:
    def __init__(self, failures: list[str]):
        self.failures = failures
        self.calls = 0

    async def infer(self, *args: Any, **kwargs: Any) -> FakeResult:
        self.calls += 1
        if self.failures:
            raise InferenceServerException("boom", status=self.failures.pop(0))
        return FakeResult()


def encoder(failures: list[str], policy: RetryPolicy) -> tuple[TritonEncoder, FakeClient]:
    enc = TritonEncoder.__new__(TritonEncoder)
    enc.url = "fake:1"
    enc.policy = policy
    fake = FakeClient(failures)
    enc._client = fake  # type: ignore[assignment]
    return enc, fake


async def test_retries_unavailable_then_succeeds_and_normalizes() -> None:
    enc, fake = encoder(["StatusCode.UNAVAILABLE", "StatusCode.UNAVAILABLE"], RetryPolicy(backoff_s=0.001))
    vectors = await enc.encode_pixels(np.zeros((1, 3, 4, 4), dtype=np.float32))
    assert fake.calls == 3
    np.testing.assert_allclose(vectors, [[0.6, 0.8]], rtol=1e-6)


async def test_gives_up_after_attempts_with_unavailable() -> None:
    enc, fake = encoder(["StatusCode.UNAVAILABLE"] * 10, RetryPolicy(attempts=3, backoff_s=0.001))
    with pytest.raises(Unavailable, match="UNAVAILABLE"):
        await enc.encode_pixels(np.zeros((1, 3, 4, 4), dtype=np.float32))
    assert fake.calls == 3


async def test_does_not_retry_invalid_argument() -> None:
    enc, fake = encoder(["StatusCode.INVALID_ARGUMENT"], RetryPolicy(backoff_s=0.001))
    with pytest.raises(InvalidArgument):
        await enc.encode_pixels(np.zeros((1, 3, 4, 4), dtype=np.float32))
    assert fake.calls == 1


async def test_does_not_retry_internal() -> None:
    enc, fake = encoder(["StatusCode.INTERNAL", "StatusCode.INTERNAL"], RetryPolicy(backoff_s=0.001))
    with pytest.raises(Unavailable):
        await enc.encode_pixels(np.zeros((1, 3, 4, 4), dtype=np.float32))
    assert fake.calls == 1


async def test_passed_deadline_is_not_attempted() -> None:
    enc, fake = encoder([], RetryPolicy())
    with pytest.raises(DeadlineExceeded):
        await enc.encode_pixels(np.zeros((1, 3, 4, 4), dtype=np.float32), deadline=time.monotonic() - 1)
    assert fake.calls == 0


async def test_backoff_stops_at_deadline() -> None:
    enc, fake = encoder(["StatusCode.UNAVAILABLE"] * 10, RetryPolicy(attempts=10, backoff_s=5.0))
    with pytest.raises(Unavailable):
        await enc.encode_pixels(np.zeros((1, 3, 4, 4), dtype=np.float32), deadline=time.monotonic() + 1.0)
    assert fake.calls == 1  # the 5 s pause would overrun the 1 s deadline, so no second attempt
