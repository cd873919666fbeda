"""How Milvus failures become domain errors: by ``MilvusException.code`` and the gRPC status, never by text.

The codes were measured against the Milvus 2.3 server with pymilvus 2.6 (``tests/unit/test_index.py``
drives them with real exception objects; the integration tests meet them for real).

Refused credentials look like an outage on the surface: pymilvus raises ``MilvusException`` code 2,
"Fail connecting to server ... illegal connection params or server unavailable", for a wrong
password exactly as for a server that is down. Its cause is the server's answer, a gRPC
``UNAUTHENTICATED`` ("auth check failure", or "missing authorization in header" without a token),
so the exception's chain is read for that status first: retrying with the same credentials cannot
succeed, and the person running the job needs to hear where they came from.
"""

from __future__ import annotations

import time

import grpc
from pymilvus import MilvusException

from core.errors import DeadlineExceeded, FailedPrecondition, T2IError, Unavailable
from core.logs import quiet_pymilvus
from core.settings import redact_uri

quiet_pymilvus()  # pymilvus, just imported, has set its own logger up (core.logs.quiet_pymilvus)

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


class CredentialsRefused(FailedPrecondition):
    """Milvus refused the credentials (a wrong, stale or missing token); never retried, since the same ones fail again."""


def _status(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC status of a raw ``grpc.RpcError`` or of a ``MilvusException`` that wraps one."""
    if isinstance(exc, MilvusException):
        return exc.code if isinstance(exc.code, grpc.StatusCode) else None
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        code = exc.code()
        return code if isinstance(code, grpc.StatusCode) else None
    return None


def _refusal(exc: BaseException) -> BaseException | None:
    """The ``UNAUTHENTICATED`` answer in ``exc`` or its chain of causes (pymilvus wraps it in its connection error), or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if _status(current) == grpc.StatusCode.UNAUTHENTICATED:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _reason(answer: BaseException) -> str:
    details = getattr(answer, "details", None)
    text = details() if callable(details) else getattr(answer, "message", None)
    return str(text or "UNAUTHENTICATED")


def classify(
    exc: BaseException,
    what: str,
    uri: str,
    timeout_s: float,
    deadline: float | None = None,
    now: float | None = None,
    credentials_from: str = "",
) -> T2IError | None:
    """The domain error for a failed Milvus call, or None when it is not one we expect (a bug).

    Args:
        exc: What pymilvus or gRPC raised.
        what: The operation, for the message.
        uri: The Milvus address, for the message (credentials in it are removed).
        timeout_s: The timeout the call had.
        deadline: The caller's deadline on the monotonic clock, if any.
        now: The monotonic time of the failure (defaults to now).
        credentials_from: Where the token was read from, for the message of ``CredentialsRefused``
            (``Settings.milvus_credentials_source``; empty when no token was given).
    """
    uri = redact_uri(uri)
    if (answer := _refusal(exc)) is not None:
        given = f"the credentials from {credentials_from} do not belong to this Milvus, or are stale" if credentials_from else "no credentials were given"
        return CredentialsRefused(
            f"Milvus at {uri} refused the credentials ({what}: {_reason(answer)}): {given}; "
            "set T2I_MILVUS_TOKEN_FILE (or T2I_MILVUS_TOKEN) to this Milvus's user:password; retrying cannot help"
        )
    return _outage(exc, what, uri, timeout_s, deadline, now)


def _outage(exc: BaseException, what: str, uri: str, timeout_s: float, deadline: float | None, now: float | None) -> T2IError | None:
    """``classify`` for everything but refused credentials."""
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
