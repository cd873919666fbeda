"""How Milvus failures become domain errors: by ``MilvusException.code`` and the gRPC status, never by text.

The codes were measured against the Milvus 2.3 server with pymilvus 2.6 (``tests/unit/test_index.py``
drives them with real exception objects; the integration tests meet them for real).
"""

from __future__ import annotations

import time

import grpc
from pymilvus import MilvusException

from core.errors import DeadlineExceeded, T2IError, Unavailable
from core.settings import redact_uri

# Milvus error codes (``MilvusException.code``; the server's merr codes, which pymilvus passes on).
COLLECTION_NOT_FOUND = 100
COLLECTION_NOT_LOADED = 101  # after a Milvus restart, until its query node has loaded the collection again
ALIAS_NOT_FOUND = 1600
# The service cannot answer now: not ready (1), unavailable or connection failed (2), memory,
# request, disk and rate limits (3, 4, 7, 8), time tick delay (11). pymilvus also uses 1 for
# its own "retry timeout"; its parameter errors are subclasses and are never classified as these.
UNAVAILABLE_CODES = frozenset({1, 2, 3, 4, 7, 8, 11})
UNAVAILABLE_STATUS = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED})


class CollectionMissing(Unavailable):
    """The collection named in a call no longer exists (a full reindex swapped the alias and dropped it)."""


def _status(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC status of a raw ``grpc.RpcError`` or of a ``MilvusException`` that wraps one."""
    if isinstance(exc, MilvusException):
        return exc.code if isinstance(exc.code, grpc.StatusCode) else None
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        code = exc.code()
        return code if isinstance(code, grpc.StatusCode) else None
    return None


def classify(exc: BaseException, what: str, uri: str, timeout_s: float, deadline: float | None = None, now: float | None = None) -> T2IError | None:
    """The domain error for a failed Milvus call, or None when it is not one we expect (a bug).

    Args:
        exc: What pymilvus or gRPC raised.
        what: The operation, for the message.
        uri: The Milvus address, for the message (credentials in it are removed).
        timeout_s: The timeout the call had.
        deadline: The caller's deadline on the monotonic clock, if any.
        now: The monotonic time of the failure (defaults to now).
    """
    uri = redact_uri(uri)
    status = _status(exc)
    if status == grpc.StatusCode.DEADLINE_EXCEEDED or isinstance(exc, (grpc.FutureTimeoutError, TimeoutError)):
        if deadline is not None and (now if now is not None else time.monotonic()) >= deadline:
            return DeadlineExceeded(f"deadline passed while waiting for Milvus ({what})")
        return Unavailable(f"Milvus at {uri} did not answer ({what}) within {timeout_s:.1f} s")
    if status in UNAVAILABLE_STATUS:
        return Unavailable(f"Milvus at {uri} is unavailable ({what}): {status.name if status else ''}")
    if isinstance(exc, MilvusException):
        if exc.code == COLLECTION_NOT_FOUND:
            return CollectionMissing(f"Milvus collection gone ({what}): the alias was moved; retry")
        if exc.code == COLLECTION_NOT_LOADED or (exc.code in UNAVAILABLE_CODES and type(exc) is MilvusException):
            return Unavailable(
                f"Milvus at {uri} is unavailable ({what}): {exc.message}"
                + ("; the collection is loading, as after a restart: retry shortly" if exc.code == COLLECTION_NOT_LOADED else "")
            )
    return None
