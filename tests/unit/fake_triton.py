"""A fake async Triton client for unit tests: answers or fails with real ``InferenceServerException`` objects."""

from __future__ import annotations

from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException


class FakeResult:
    def __init__(self, batch: int, vector: np.ndarray) -> None:
        self.array = np.tile(vector, (batch, 1)).astype(np.float32)

    def as_numpy(self, name: str) -> np.ndarray:
        return self.array


class FakeTritonClient:
    """``infer`` fails with the queued statuses (as tritonclient reports them), then answers ``vector`` per row."""

    def __init__(self, failures: list[str] | None = None, vector: tuple[float, ...] = (3.0, 4.0)) -> None:
        self.failures = list(failures or [])
        self.vector = np.asarray(vector, dtype=np.float32)
        self.calls = 0
        self.timeouts: list[float] = []
        self.ready = True
        self.versions: list[str] = []  # the model version of each infer call
        self.headers: list[dict[str, str]] = []  # the metadata of each infer call (trace context)

    async def infer(
        self,
        model: str,
        inputs: list[Any],
        model_version: str = "",
        outputs: Any = None,
        client_timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> FakeResult:
        self.calls += 1
        self.headers.append(dict(headers or {}))
        self.versions.append(model_version)
        self.timeouts.append(float(client_timeout or 0))
        if self.failures:
            # tritonclient turns a grpc.RpcError into this, with status=str(rpc_error.code()).
            raise InferenceServerException("boom", status=self.failures.pop(0))
        return FakeResult(int(inputs[0].shape()[0]), self.vector)

    async def is_model_ready(self, model: str, model_version: str = "", client_timeout: float | None = None) -> bool:
        return self.ready

    async def close(self) -> None:
        pass
