"""Async encoder that turns texts and images into normalized CLIP vectors through Triton.

This is the one adapter for Triton: explicit timeouts, retries only on retryable codes with capped
exponential backoff inside the caller's deadline, and domain errors out (``Unavailable``,
``DeadlineExceeded``, ``InvalidArgument``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from core.errors import DeadlineExceeded, InvalidArgument, Unavailable
from core.manifest import PREPROCESSOR_FILE, TEXT_MODEL, TOKENIZER_FILE, VISION_MODEL, Manifest
from core.settings import Settings, TlsFiles
from core.tracing import outgoing, span
from inference.images import PreprocessConfig
from inference.tokenizer import ClipTokenizer, TokenBatch

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# tritonclient carries the gRPC status of a failed call as ``str(StatusCode.X)``; this maps it back.
_STATUS_BY_NAME = {str(code): code for code in grpc.StatusCode}


def status_of(exc: InferenceServerException) -> grpc.StatusCode | None:
    """The gRPC status code of a failed Triton call (None when it did not come from gRPC)."""
    return _STATUS_BY_NAME.get(str(exc.status()))


@dataclass(frozen=True)
class RetryPolicy:
    """How one call to Triton is retried.

    Attributes:
        timeout_s: Limit for one attempt.
        attempts: Attempts in all, the first included.
        backoff_s: First pause between attempts; doubles each time.
        max_backoff_s: Cap of the pause.
    """

    timeout_s: float = 5.0
    attempts: int = 4
    backoff_s: float = 0.05
    max_backoff_s: float = 1.0


# tritonclient's channel_args replace its defaults, so the message sizes and keepalive are set again
# here. round_robin spreads requests over every address a target resolves to: with
# ``dns:///triton-headless:8001`` (a headless Service) each Triton pod gets its share, and Triton's
# --grpc-max-connection-age makes the channel re-resolve, so new pods get traffic too.
MAX_TRITON_MESSAGE = 2**31 - 1
TRITON_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_TRITON_MESSAGE),
    ("grpc.max_receive_message_length", MAX_TRITON_MESSAGE),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.lb_policy_name", "round_robin"),
]


def triton_client(url: str, tls: TlsFiles | None = None) -> Any:
    """An async Triton client for ``url`` (``host:port`` or a ``dns:///`` target), balanced per request; over TLS when ``tls`` is given."""
    if tls is None:
        return triton_aio.InferenceServerClient(url, channel_args=TRITON_CHANNEL_ARGS)
    return triton_aio.InferenceServerClient(
        url,
        channel_args=TRITON_CHANNEL_ARGS,
        ssl=True,
        root_certificates=str(tls.ca) if tls.ca else None,
        private_key=str(tls.key) if tls.key else None,
        certificate_chain=str(tls.cert) if tls.cert else None,
    )


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class TritonEncoder:
    """Encodes texts and images with one version of the ``clip_text`` and ``clip_vision`` models of one Triton."""

    def __init__(
        self,
        url: str,
        repo: Path,
        policy: RetryPolicy = RetryPolicy(),
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
        version: int | None = None,
        tls: TlsFiles | None = None,
    ):
        """Read the manifest, tokenizer and preprocessing config of ``repo`` and open a channel.

        Args:
            url: Triton gRPC address, ``host:port``.
            repo: The exported model repository (its manifest and tokenizer).
            policy: Timeouts and retries.
            client: An async Triton client to use instead of opening one (tests, or several versions on one channel).
            clock: Monotonic clock that deadlines are measured on (tests).
            sleep: Coroutine function that waits between attempts (tests).
            version: The model version to encode with (default: the newest export, named by the root manifest).
            tls: TLS files when Triton serves TLS (``Settings.triton_tls_files``).
        """
        self.url = url
        self.manifest = Manifest.read(repo) if version is None else Manifest.read_version(repo, version)
        self.tokenizer = ClipTokenizer(self.manifest.version_dir(repo, TEXT_MODEL) / TOKENIZER_FILE, self.manifest.context_length)
        self.preprocess_config = PreprocessConfig.from_file(self.manifest.version_dir(repo, VISION_MODEL) / PREPROCESSOR_FILE)
        self.policy = policy
        self.clock = clock
        self.sleep = sleep
        self._client = client if client is not None else triton_client(url, tls)

    async def close(self) -> None:
        """Close the gRPC channel."""
        await self._client.close()

    @property
    def version(self) -> str:
        """The Triton model version this encoder asks for."""
        return str(self.manifest.version)

    async def ready(self) -> bool:
        """True when both models are loaded and ready at this version; False when Triton is unreachable."""
        try:
            for model in (TEXT_MODEL, VISION_MODEL):
                if not await self._client.is_model_ready(model, model_version=self.version, client_timeout=self.policy.timeout_s):
                    return False
            return True
        except InferenceServerException:
            return False

    async def encode_tokens(self, tokens: TokenBatch, deadline: float | None = None) -> np.ndarray:
        """Normalized text embeddings ``[batch, dim]`` for tokenized texts."""
        inputs = [_tensor("input_ids", tokens.input_ids), _tensor("attention_mask", tokens.attention_mask)]
        return l2_normalize(await self._infer(TEXT_MODEL, inputs, "text_embeds", deadline))

    async def encode_texts(self, texts: list[str], deadline: float | None = None) -> tuple[np.ndarray, TokenBatch]:
        """Tokenize and encode texts; returns the vectors and the token batch (lengths, truncation)."""
        with span("tokenize", texts=len(texts)):
            tokens = self.tokenizer.encode(texts)
        return await self.encode_tokens(tokens, deadline), tokens

    async def encode_pixels(self, pixel_values: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """Normalized image embeddings ``[batch, dim]`` for preprocessed ``pixel_values``."""
        return l2_normalize(await self._infer(VISION_MODEL, [_tensor("pixel_values", pixel_values)], "image_embeds", deadline))

    async def _infer(self, model: str, inputs: list[InferInput], output: str, deadline: float | None) -> np.ndarray:
        policy = self.policy
        pause = policy.backoff_s
        for attempt in range(1, policy.attempts + 1):
            timeout = policy.timeout_s
            if deadline is not None:
                timeout = min(timeout, deadline - self.clock())
                if timeout <= 0:
                    raise DeadlineExceeded(f"deadline passed before Triton answered ({model})")
            try:
                result = await self._client.infer(
                    model, inputs, model_version=self.version, outputs=[InferRequestedOutput(output)], client_timeout=timeout, headers=dict(outgoing())
                )
                return np.asarray(result.as_numpy(output))
            except InferenceServerException as exc:
                status = status_of(exc)
                if status == grpc.StatusCode.INVALID_ARGUMENT:
                    raise InvalidArgument(f"Triton rejected the input for {model}: {exc.message()}") from exc
                last_try = attempt == policy.attempts or status not in RETRYABLE
                if deadline is not None and self.clock() + pause >= deadline:
                    last_try = True
                if last_try:
                    if status == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None and self.clock() >= deadline:
                        raise DeadlineExceeded(f"deadline passed while waiting for Triton ({model})") from exc
                    name = status.name if status else str(exc.status())
                    raise Unavailable(f"Triton at {self.url} failed for {model}: {name}: {exc.message()}") from exc
                logger.warning("Triton %s attempt %d failed (%s); retrying in %.2f s", model, attempt, status, pause)
                await self.sleep(pause)
                pause = min(pause * 2, policy.max_backoff_s)
        raise AssertionError("unreachable")


def encoder_from_settings(settings: Settings, timeout_s: float | None = None, version: int | None = None) -> TritonEncoder:
    """The encoder that ``settings`` describe (``version``: default the newest export); ``timeout_s`` overrides the per-call timeout (batch jobs)."""
    return TritonEncoder(
        settings.triton_url,
        settings.model_repository,
        RetryPolicy(timeout_s=timeout_s or settings.triton_timeout_s),
        version=version,
        tls=settings.triton_tls_files(),
    )


def _tensor(name: str, array: np.ndarray) -> InferInput:
    dtype = "INT64" if array.dtype == np.int64 else "FP32"
    tensor = InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor
