"""Domain errors shared by the gateway, the reindex job, the adapters and the command line.

Each error names the gRPC status it maps to; the gateway's error-mapping interceptor does the mapping in one
place (``gateway.errors``). Messages are written for a person: they say what was wrong and,
where possible, what to do about it.
"""

from __future__ import annotations


class UserError(Exception):
    """An expected error whose message tells a person what to do; the CLI prints it without a traceback."""


class T2IError(UserError):
    """Base class of the domain errors that requests can meet; each maps to a gRPC status."""

    grpc_code_name: str = "INTERNAL"


class InvalidArgument(T2IError):
    """The request itself is wrong; retrying it unchanged will fail again."""

    grpc_code_name = "INVALID_ARGUMENT"


class NotFound(T2IError):
    """A referenced object (an image id, a collection) does not exist."""

    grpc_code_name = "NOT_FOUND"


class FailedPrecondition(T2IError):
    """The system is not in a state to serve this request (e.g. model mismatch, empty index)."""

    grpc_code_name = "FAILED_PRECONDITION"


class Unavailable(T2IError):
    """A downstream service (Triton, Milvus) cannot be reached; retrying later may succeed."""

    grpc_code_name = "UNAVAILABLE"


class DeadlineExceeded(T2IError):
    """The caller's deadline ran out before the work was done."""

    grpc_code_name = "DEADLINE_EXCEEDED"


class ResourceExhausted(T2IError):
    """A size or rate limit was hit."""

    grpc_code_name = "RESOURCE_EXHAUSTED"
