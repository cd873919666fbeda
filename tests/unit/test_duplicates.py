"""FindDuplicates (``search.duplicates``) on the fake Milvus client: pairs once with a < b, the threshold, paging, filters, errors.

The expected pairs are computed here with numpy from the planted vectors, independently of the
engine and of the fake. The last tests run the RPC through a real in-process gRPC server with the
gateway's interceptors, so that a streamed error gets its status like a unary one.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from core.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from core.filters import SearchFilter
from gateway.admission import Admission, AdmissionInterceptor
from gateway.errors import ErrorMappingInterceptor
from gateway.servicers import SearchServicer
from gateway.telemetry import TelemetryInterceptor
from search.duplicates import Chunk, DuplicatesQuery
from search.engine import NOTHING_INDEXED
from t2i import cli
from t2i.duplicates import groups
from tests.support.engine import Parts
from tests.support.servers import real_server
from text2image.v1 import text2image_pb2 as pb
from text2image.v1 import text2image_pb2_grpc as pb_grpc

# id -> angle in degrees on the unit circle (the unit model's vectors have 2 dimensions): cosine = cos(difference).
ANGLES = {"a": 0.0, "b": 8.0, "c": -3.0, "d": 60.0, "e": 65.0, "f": 140.0, "g": 150.0, "h": 160.0, "i": 250.0, "j": 300.0}
LABELS = {"d": ["keep"], "e": ["keep"], "f": ["keep"], "g": ["keep"], "a": ["keep"]}


def vector(angle: float) -> list[float]:
    return [math.cos(math.radians(angle)), math.sin(math.radians(angle))]


def expected_pairs(min_score: float, ids: list[str] | None = None) -> dict[tuple[str, str], float]:
    """Every pair (a < b) of the planted images (of ``ids``) at float32 cosine >= min_score, by numpy."""
    chosen = sorted(ids or ANGLES)
    found = {}
    for n, a in enumerate(chosen):
        for b in chosen[n + 1 :]:
            score = np.float32(np.dot(vector(ANGLES[a]), vector(ANGLES[b])))
            if score >= np.float32(min_score):
                found[(a, b)] = float(score)
    return found


@pytest.fixture()
async def parts(model_repo: Path) -> AsyncIterator[Parts]:
    made = Parts(model_repo)
    made.milvus.add(
        "c1", made.stamp.describe(), {i: {"uri": f"mem://{i}", "labels": LABELS.get(i, []), "vector": vector(angle)} for i, angle in ANGLES.items()}
    )
    made.milvus.aliases["alias"] = "c1"
    yield made
    await made.engine.close()


async def chunks(parts: Parts, query: DuplicatesQuery, batch: int = 3, deadline: float | None = None) -> list[Chunk]:
    return [chunk async for chunk in parts.engine.find_duplicates(query, deadline, batch)]


def pairs_of(found: list[Chunk]) -> list[tuple[str, str]]:
    return [(p.a, p.b) for chunk in found for p in chunk.pairs]


async def test_each_pair_once_with_a_before_b_in_sorted_chunks_and_progress(parts: Parts) -> None:
    found = await chunks(parts, DuplicatesQuery(min_score=0.9))
    pairs = pairs_of(found)
    assert sorted(pairs) == sorted(expected_pairs(0.9)) and len(pairs) == len(set(pairs)) == 7
    assert all(a < b for a, b in pairs)
    assert all([(p.a, p.b) for p in c.pairs] == sorted((p.a, p.b) for p in c.pairs) for c in found)
    scores = {(p.a, p.b): p.score for c in found for p in c.pairs}
    assert scores == pytest.approx(expected_pairs(0.9), abs=1e-6)
    assert [c.scanned for c in found] == [3, 6, 9, 10, 10] and {c.total for c in found} == {10} and {c.collection for c in found} == {"c1"}
    assert [c.next_page_token for c in found] == [""] * 5
    # The default threshold (0.95) drops (f, h), 20 degrees apart (cosine 0.940).
    default = sorted(pairs_of(await chunks(parts, DuplicatesQuery())))
    assert default == sorted(expected_pairs(0.95)) == [("a", "b"), ("a", "c"), ("b", "c"), ("d", "e"), ("f", "g"), ("g", "h")]


async def test_a_score_equal_to_min_score_counts_and_one_just_above_it_does_not(parts: Parts) -> None:
    exact = expected_pairs(0.5)[("d", "e")]  # the float32 cosine of d and e
    assert ("d", "e") in pairs_of(await chunks(parts, DuplicatesQuery(min_score=exact)))
    above = float(np.nextafter(np.float32(exact), np.float32(2)))
    assert ("d", "e") not in pairs_of(await chunks(parts, DuplicatesQuery(min_score=above)))
    assert sorted(pairs_of(await chunks(parts, DuplicatesQuery(min_score=1.0)))) == []


async def test_pages_of_max_images_give_the_pairs_of_one_stream(parts: Parts) -> None:
    """max_neighbors=1: a's closest is c, b's closest is a, so (a, b) is found from b only; c finds a again. Each page must
    report (a, b) once and (a, c) once, as one stream does, though the pages that find them from b and c scan no a."""
    query = DuplicatesQuery(min_score=0.9, max_neighbors=1)
    whole = pairs_of(await chunks(parts, query))
    assert sorted(whole) == [("a", "b"), ("a", "c"), ("d", "e"), ("f", "g"), ("g", "h")]
    for size in (1, 2, 4):
        paged: list[tuple[str, str]] = []
        token, pages = "", 0
        while True:
            found = await chunks(parts, DuplicatesQuery(min_score=0.9, max_neighbors=1, page_token=token, max_images=size))
            paged += pairs_of(found)
            assert all(c.next_page_token == "" for c in found[:-1]) and found[-1].scanned <= size
            token, pages = found[-1].next_page_token, pages + 1
            if not token:
                break
        assert sorted(paged) == sorted(whole), size
        assert pages == math.ceil(len(ANGLES) / size)  # the last page ends with the scan: no token to an empty page


async def test_only_the_images_the_filter_admits_are_compared(parts: Parts) -> None:
    keep = SearchFilter(all_of=["keep"])
    found = await chunks(parts, DuplicatesQuery(min_score=0.9, search_filter=keep))
    assert sorted(pairs_of(found)) == sorted(expected_pairs(0.9, [i for i in ANGLES if i in LABELS])) == [("d", "e"), ("f", "g")]
    assert found[-1].total == found[-1].scanned == len(LABELS)


async def test_bad_requests_are_refused_before_milvus_is_asked(parts: Parts) -> None:
    bad = {
        "min_score must be between 0.5 and 1": [DuplicatesQuery(min_score=0.4), DuplicatesQuery(min_score=1.01), DuplicatesQuery(min_score=float("nan"))],
        "max_neighbors must be between 1 and 1000": [DuplicatesQuery(max_neighbors=1001), DuplicatesQuery(max_neighbors=-1)],
        "max_images must be 0": [DuplicatesQuery(max_images=-5)],
        "page_token: not a FindDuplicates token": [DuplicatesQuery(page_token="garbage!"), DuplicatesQuery(page_token="eyJ2IjoyfQ")],
    }
    for message, queries in bad.items():
        for query in queries:
            with pytest.raises(InvalidArgument, match=message):
                await chunks(parts, query)
    assert parts.milvus.calls == []


async def test_page_tokens_are_bound_to_the_request_and_the_collection(parts: Parts) -> None:
    first = await chunks(parts, DuplicatesQuery(min_score=0.9, max_images=2))
    token = first[-1].next_page_token
    assert token
    with pytest.raises(InvalidArgument, match="another min_score, max_neighbors or filter"):
        await chunks(parts, DuplicatesQuery(min_score=0.95, page_token=token))
    with pytest.raises(InvalidArgument, match="another min_score, max_neighbors or filter"):
        await chunks(parts, DuplicatesQuery(min_score=0.9, page_token=token, search_filter=SearchFilter(all_of=["keep"])))
    assert pairs_of(await chunks(parts, DuplicatesQuery(min_score=0.9, page_token=token, max_images=50)))  # max_images may change
    parts.milvus.add("c2", parts.stamp.describe(), {"z": {"uri": "mem://z", "vector": [1.0, 0.0]}})
    parts.milvus.aliases["alias"] = "c2"  # a reindex swapped the alias
    with pytest.raises(FailedPrecondition, match="belongs to collection c1, but the alias now points at c2"):
        await chunks(parts, DuplicatesQuery(min_score=0.9, page_token=token))


async def test_nothing_indexed_a_passed_deadline_and_a_dropped_collection(parts: Parts) -> None:
    with pytest.raises(DeadlineExceeded):
        await chunks(parts, DuplicatesQuery(), deadline=time.monotonic() - 1)
    stream = parts.engine.find_duplicates(DuplicatesQuery(min_score=0.9), None, 3)
    first = await anext(stream)
    assert first.scanned == 3
    parts.milvus.collections.pop("c1")  # dropped under the scan by an alias swap
    with pytest.raises(FailedPrecondition, match="c1 was dropped during the scan"):
        await anext(stream)
    parts.milvus.aliases.clear()
    with pytest.raises(FailedPrecondition, match=NOTHING_INDEXED):
        await chunks(parts, DuplicatesQuery())


@pytest.fixture()
async def gateway(parts: Parts) -> AsyncIterator[str]:
    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(parts.engine, 10), server)

    chain = [TelemetryInterceptor(), AdmissionInterceptor({}, Admission(4)), ErrorMappingInterceptor()]
    async with real_server(chain, register) as address:
        yield address


async def test_the_rpc_streams_through_the_interceptors_and_maps_errors(gateway: str) -> None:
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        responses = [r async for r in stub.FindDuplicates(pb.FindDuplicatesRequest(min_score=0.9), timeout=10)]
        assert sorted((p.a, p.b) for r in responses for p in r.pairs) == sorted(expected_pairs(0.9))
        assert responses[-1].scanned == responses[-1].total == len(ANGLES) and responses[-1].collection == "c1"
        for request, code, message in [
            (pb.FindDuplicatesRequest(min_score=0.2), grpc.StatusCode.INVALID_ARGUMENT, "min_score must be between 0.5 and 1"),
            (pb.FindDuplicatesRequest(page_token="nope"), grpc.StatusCode.INVALID_ARGUMENT, "page_token"),
            (pb.FindDuplicatesRequest(filter=pb.Filter(ids=["x"] * 10_001)), grpc.StatusCode.RESOURCE_EXHAUSTED, "10,000"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for _ in stub.FindDuplicates(request, timeout=10):
                    pass
            assert raised.value.code() == code and message in (raised.value.details() or "")


def test_groups_are_the_connected_components_of_the_pairs() -> None:
    assert groups([("b", "c"), ("d", "e"), ("a", "b"), ("x", "y"), ("c", "a"), ("e", "f")]) == [["a", "b", "c"], ["d", "e", "f"], ["x", "y"]]
    assert groups([]) == []


async def test_t2i_duplicates_prints_pairs_groups_json_and_exits_2_on_a_bad_request(
    gateway: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("T2I_TOKEN", "unused-on-an-open-gateway")
    base = ["duplicates", "--address", gateway, "--min-score", "0.9", "--page-images", "3"]
    assert await asyncio.to_thread(cli.main, base) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "7 pairs of near-duplicates" and out.splitlines()[1:3] == ["  0.9986  a  c", "  0.9962  d  e"]
    assert "scanned 10 of 10 images" in err  # progress, page after page (4 calls of 3 images)
    assert await asyncio.to_thread(cli.main, [*base, "--json", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert sorted((p["a"], p["b"]) for p in json.loads(out)) == sorted(expected_pairs(0.9)) and err == ""
    assert await asyncio.to_thread(cli.main, [*base, "--groups", "--json", "--quiet"]) == 0
    assert [g["ids"] for g in json.loads(capsys.readouterr().out)] == [["a", "b", "c"], ["f", "g", "h"], ["d", "e"]]
    assert await asyncio.to_thread(cli.main, [*base, "--groups", "--quiet"]) == 0
    assert "3 groups of near-duplicates (7 pairs)" in capsys.readouterr().out
    assert await asyncio.to_thread(cli.main, ["duplicates", "--address", gateway, "--min-score", "0.2"]) == 2
    assert "error: INVALID_ARGUMENT: min_score must be between 0.5 and 1" in capsys.readouterr().err


class HeldStream:
    """An engine whose FindDuplicates stream sends one chunk, then waits until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.ended = asyncio.Event()

    async def find_duplicates(self, query: DuplicatesQuery, deadline: float | None) -> AsyncIterator[Chunk]:
        try:
            yield Chunk([], 1, 2, "held")
            await self.release.wait()
            yield Chunk([], 2, 2, "held")
        finally:
            self.ended.set()  # where search.duplicates closes its scan


def requests_counted(code: str) -> float:
    return REGISTRY.get_sample_value("t2i_requests_total", {"method": "FindDuplicates", "code": code}) or 0.0


async def test_a_stream_holds_its_admission_slot_until_it_ends_and_is_counted_once() -> None:
    engine, admission = HeldStream(), Admission(1)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(engine, 10), server)  # type: ignore[arg-type]  # a stand-in engine

    before = requests_counted("OK")
    chain = [TelemetryInterceptor(), AdmissionInterceptor({}, admission), ErrorMappingInterceptor()]
    async with real_server(chain, register) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        held = stub.FindDuplicates(pb.FindDuplicatesRequest(), timeout=10)
        assert (await held.read()).scanned == 1
        assert admission.in_flight == 1
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stub.FindDuplicates(pb.FindDuplicatesRequest(), timeout=10):
                pass
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 1 requests in flight" in (refused.value.details() or "")
        engine.release.set()
        assert (await held.read()).scanned == 2 and await held.read() is grpc.aio.EOF
    assert admission.in_flight == 0 and admission.latency_s == {}  # a stream's time feeds no usual latency
    assert requests_counted("OK") == before + 1


async def test_a_cancelled_stream_stops_the_scan_and_frees_its_slot() -> None:
    engine, admission = HeldStream(), Admission(1)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(engine, 10), server)  # type: ignore[arg-type]  # a stand-in engine

    before = requests_counted("CANCELLED")
    chain = [TelemetryInterceptor(), AdmissionInterceptor({}, admission), ErrorMappingInterceptor()]
    async with real_server(chain, register) as address, grpc.aio.insecure_channel(address) as channel:
        held = pb_grpc.SearchServiceStub(channel).FindDuplicates(pb.FindDuplicatesRequest(), timeout=10)
        assert (await held.read()).scanned == 1 and admission.in_flight == 1
        held.cancel()
        await asyncio.wait_for(engine.ended.wait(), 5)
        for _ in range(50):  # the interceptors' finally blocks run as the server's task unwinds
            if admission.in_flight == 0:
                break
            await asyncio.sleep(0.05)
    assert admission.in_flight == 0 and not engine.release.is_set()
    assert requests_counted("CANCELLED") == before + 1
