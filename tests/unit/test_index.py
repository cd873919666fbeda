"""The Milvus adapter: errors classified by code, deadlines, read-only resolution and the reuse window.

Failures are real pymilvus and gRPC exception objects; the client is a fake (``fake_milvus``),
and ``tests/integration`` runs the same behaviour against the real server.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from pymilvus import MilvusException
from pymilvus.exceptions import DataNotMatchException, ParamError

from core.errors import DeadlineExceeded, FailedPrecondition, NotFound, Unavailable
from core.index import ImageIndex
from core.milvus_errors import ALIAS_NOT_FOUND, COLLECTION_NOT_FOUND, CollectionMissing, CredentialsRefused, classify
from core.records import ModelStamp
from tests.unit.fake_milvus import FakeMilvusClient

STAMP = ModelStamp("unit:model", "c" * 64, 2)
OTHER = ModelStamp("someone/else-clip", "f" * 64, 2)


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class RpcFailure(grpc.RpcError):
    """What grpc raises for a failed call: an RpcError that is also a Call with a status."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def make_index(client: FakeMilvusClient, clock: Clock | None = None) -> ImageIndex:
    return ImageIndex("http://fake:19530", "alias", STAMP, timeout_s=5.0, client=client, clock=clock or Clock())


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (MilvusException(COLLECTION_NOT_FOUND, "collection not found"), CollectionMissing),
        (MilvusException(2, "Fail connecting to server"), Unavailable),  # pymilvus's connection failure
        (MilvusException(8, "rate limit exceeded"), Unavailable),
        (MilvusException(101, "failed to search: collection not loaded"), Unavailable),  # met after a Milvus SIGKILL and restart
        (MilvusException(grpc.StatusCode.UNAVAILABLE, "Retry timeout: 5s"), Unavailable),  # pymilvus's retry wrapper
        (RpcFailure(grpc.StatusCode.UNAVAILABLE), Unavailable),
        (RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED), Unavailable),  # slower than one call may take
        (grpc.FutureTimeoutError(), Unavailable),
        (MilvusException(ALIAS_NOT_FOUND, "alias not found"), type(None)),  # handled where it is expected
        (ParamError(message="bad param"), type(None)),  # our bug, not an outage
        (DataNotMatchException(message="wrong dim"), type(None)),
        (MilvusException(65535, "unexpected"), type(None)),
        (KeyError("x"), type(None)),
    ],
)
def test_classify_by_code(exc: BaseException, expected: type) -> None:
    assert type(classify(exc, "search", "http://m", 5.0)) is expected


def test_timeout_at_the_callers_deadline_is_deadline_exceeded() -> None:
    error = classify(RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED), "search", "http://m", 0.3, deadline=10.0, now=10.0)
    assert isinstance(error, DeadlineExceeded)
    assert isinstance(classify(RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED), "search", "http://m", 0.3, deadline=10.0, now=9.0), Unavailable)


def test_failures_become_domain_errors_and_bugs_propagate() -> None:
    client = FakeMilvusClient()
    index = make_index(client)
    client.fail_with = MilvusException(grpc.StatusCode.UNAVAILABLE, "Retry timeout")
    with pytest.raises(Unavailable, match=r"Milvus at http://fake:19530 is unavailable \(describe alias\)"):
        index.active()
    client.fail_with = ParamError(message="a bug of ours")
    with pytest.raises(ParamError):
        index.active()


def test_a_dropped_collection_is_collection_missing() -> None:
    index = make_index(FakeMilvusClient())
    with pytest.raises(CollectionMissing):
        index.search("gone", np.ones(2, np.float32), 3)
    with pytest.raises(CollectionMissing):
        index.vector_of("gone", "any")


def test_unknown_id_is_not_found() -> None:
    client = FakeMilvusClient()
    client.add("c1", STAMP.describe(), {"y": {"vector": [1.0, 0.0]}})
    np.testing.assert_array_equal(make_index(client).vector_of("c1", "y"), [1.0, 0.0])
    with pytest.raises(NotFound, match="no indexed image has id 'x'"):
        make_index(client).vector_of("c1", "x")


def test_each_call_gets_the_time_left_of_the_deadline() -> None:
    client, clock = FakeMilvusClient(), Clock()
    client.add("c1", STAMP.describe())
    seen: list[float] = []
    search = client.search

    def timed_search(collection: str, /, **kwargs: Any) -> list[list[dict[str, Any]]]:
        seen.append(kwargs["timeout"])
        return search(collection, **kwargs)

    client.search = timed_search  # type: ignore[method-assign]  # the fake's own method, wrapped to record timeouts
    index = make_index(client, clock)
    index.search("c1", np.ones(2, np.float32), 3, deadline=clock() + 0.75)
    index.search("c1", np.ones(2, np.float32), 3, deadline=clock() + 60)
    index.search("c1", np.ones(2, np.float32), 3)
    assert seen == [0.75, 5.0, 5.0]  # the deadline when shorter, else the adapter's timeout
    with pytest.raises(DeadlineExceeded):
        index.search("c1", np.ones(2, np.float32), 3, deadline=clock() - 0.001)
    assert len(seen) == 3  # a passed deadline never reaches Milvus


def test_reads_never_write() -> None:
    client = FakeMilvusClient()
    index = make_index(client)
    assert index.active() is None
    info = index.info()
    assert (info.count, info.collection, info.alias, info.stamp) == (0, "", "alias", STAMP)
    assert client.writes == []


def test_writers_create_the_first_collection_and_alias() -> None:
    client = FakeMilvusClient()
    index = make_index(client)
    name = index.ensure_active()
    assert client.aliases == {"alias": name} and name.startswith("alias_")
    assert index.active() == name and index.ensure_active() == name
    assert client.writes.count("create_collection") == 1


def test_a_foreign_model_is_refused_on_read_and_write() -> None:
    client = FakeMilvusClient()
    client.add("theirs", OTHER.describe())
    client.aliases["alias"] = "theirs"
    index = make_index(client)
    for resolve in (index.active, index.ensure_active):
        with pytest.raises(FailedPrecondition, match=r"someone/else-clip .*run 't2i reindex --full'"):
            resolve()


def test_reads_reuse_the_resolved_collection_within_the_window() -> None:
    client, clock = FakeMilvusClient(), Clock()
    client.add("c1", STAMP.describe())
    client.aliases["alias"] = "c1"
    index = make_index(client, clock)
    assert index.recent_active(1.0) is None
    assert index.active() == "c1"
    clock.now += 0.99
    assert index.recent_active(1.0) == "c1"
    clock.now += 0.02
    assert index.recent_active(1.0) is None  # expired: the next read asks Milvus again


def test_swap_alias_forgets_the_recent_collection() -> None:
    client = FakeMilvusClient()
    client.add("c1", STAMP.describe())
    client.add("c2", STAMP.describe())
    client.aliases["alias"] = "c1"
    index = make_index(client)
    index.active()
    assert index.swap_alias("c2") == "c1"
    assert index.recent_active(60) is None and client.aliases["alias"] == "c2"


def test_a_collection_created_again_under_its_name_is_checked_again() -> None:
    """A reused run id can drop and create a collection under the same name: its stamp is trusted only STAMP_TTL_S."""
    from core.index import STAMP_TTL_S

    client, clock = FakeMilvusClient(), Clock()
    index = make_index(client, clock)
    client.add("alias_run_nightly", STAMP.describe())
    client.aliases["alias"] = "alias_run_nightly"
    assert index.active() == "alias_run_nightly" and index.checked_stamp("alias_run_nightly") == STAMP
    client.collections.pop("alias_run_nightly")
    client.add("alias_run_nightly", OTHER.describe())  # the same name, another model's vectors
    assert index.active() == "alias_run_nightly"  # within the window the checked stamp is trusted
    clock.now += STAMP_TTL_S
    with pytest.raises(FailedPrecondition, match="someone/else-clip"):
        index.active()


class FlakyOnce(FakeMilvusClient):
    """Fails the first ``failures`` calls with a Milvus timeout (a busy disk), then answers."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def _enter(self, name: str, collection: str | None = None) -> dict[str, Any] | None:
        if self.failures:
            self.failures -= 1
            self.calls.append(name)
            raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED)
        return super()._enter(name, collection)


def test_a_batch_job_retries_idempotent_calls_through_an_outage_within_its_budget() -> None:
    clock, waits = Clock(), []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    client = FlakyOnce(3)
    client.add("c1", STAMP.describe(), {"y": {"vector": [1.0, 0.0]}})
    index = ImageIndex("http://fake:19530", "alias", STAMP, client=client, clock=clock, retry_budget_s=30, sleep=sleep)
    np.testing.assert_array_equal(index.vector_of("c1", "y"), [1.0, 0.0])
    assert waits == [0.5, 1.0, 2.0] and client.calls == ["get"] * 4
    # The budget runs out: the outage is raised, after as many attempts as fit (the next 8 s pause would end at 31.5 s).
    client.failures, client.calls = 100, []
    with pytest.raises(Unavailable, match=r"did not answer \(get\)"):
        index.vector_of("c1", "y")
    assert waits[3:] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0] and client.calls == ["get"] * 7  # doubling, capped at 8 s
    # No budget (the gateway, bound by the request deadline): one attempt only.
    client.failures, client.calls = 1, []
    with pytest.raises(Unavailable):
        make_index(client).vector_of("c1", "y")
    assert client.calls == ["get"]


class Refused(RpcFailure):
    """The server's answer to a wrong password, as pymilvus 2.6 meets it from Milvus 2.3 (measured)."""

    def __init__(self, details: str = "auth check failure, please check username and password are correct") -> None:
        super().__init__(grpc.StatusCode.UNAUTHENTICATED)
        self._details = details

    def details(self) -> str:
        return self._details


def connection_refused(answer: RpcFailure) -> MilvusException:
    """pymilvus's connection error with the server's answer as its cause, exactly as ``MilvusClient(...)`` raises it."""
    try:
        raise MilvusException(2, "Fail connecting to server on 127.0.0.1:19530, illegal connection params or server unavailable") from answer
    except MilvusException as exc:
        return exc


def test_refused_credentials_are_not_an_outage() -> None:
    # Before: the same exception was Unavailable, retried for the whole budget as if Milvus were down.
    error = classify(connection_refused(Refused()), "connect", "http://root:pw@m:19530", 5.0, credentials_from="T2I_MILVUS_TOKEN_FILE (/run/milvus/token)")
    assert isinstance(error, CredentialsRefused) and isinstance(error, FailedPrecondition)
    assert str(error).startswith("Milvus at http://m:19530 refused the credentials (connect: auth check failure, please check username and password")
    assert "from T2I_MILVUS_TOKEN_FILE (/run/milvus/token)" in str(error) and "pw" not in str(error)
    missing = classify(connection_refused(Refused("missing authorization in header")), "connect", "http://m:19530", 5.0)
    assert isinstance(missing, CredentialsRefused) and "missing authorization in header): no credentials were given" in str(missing)
    assert isinstance(classify(Refused(), "search", "http://m", 5.0), CredentialsRefused)  # on a call of an open connection
    assert isinstance(classify(connection_refused(RpcFailure(grpc.StatusCode.UNAVAILABLE)), "connect", "http://m", 5.0), Unavailable)


def test_a_batch_job_does_not_retry_refused_credentials() -> None:
    clock, waits = Clock(), []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    client = FakeMilvusClient()
    client.fail_with = Refused()
    index = ImageIndex("http://fake:19530", "alias", STAMP, client=client, clock=clock, retry_budget_s=120, sleep=sleep, credentials_from="T2I_MILVUS_TOKEN")
    with pytest.raises(CredentialsRefused, match=r"refused the credentials \(describe alias: auth check failure.*from T2I_MILVUS_TOKEN do not belong"):
        index.active()
    assert waits == [] and client.calls == ["describe_alias"]
