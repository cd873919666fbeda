"""text2image_client against in-process gRPC servers: the token, deadlines, typed results, pages, round robin and retries.

The servers are plain ``grpc.server``s with a scripted servicer (no Triton or Milvus); the real stack is
tests/integration/test_client_package.py's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.certs import Authority
from text2image.v1 import text2image_pb2 as pb
from text2image.v1 import text2image_pb2_grpc as pb_grpc
from text2image_client import AsyncClient, Client, Filter, ImageItem, Query, SearchFailure, SearchResult, Term, Tls, target
from text2image_client._channel import channel_options

IDS = [f"img-{n:02d}" for n in range(25)]
SHOT = datetime(2024, 5, 17, 8, 30, tzinfo=UTC)


class Scripted(pb_grpc.SearchServiceServicer, pb_grpc.IndexServiceServicer, pb_grpc.EmbeddingServiceServicer):
    """Answers from a fixed ranking of 25 ids; records what each call carried."""

    def __init__(self, name: str, unavailable: bool = False) -> None:
        self.name = name
        self.unavailable = unavailable
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def record(self, context: grpc.ServicerContext, request: Any) -> None:
        with self.lock:
            self.calls.append({"metadata": dict(context.invocation_metadata()), "remaining": context.time_remaining(), "request": request})
        if self.unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is going away")

    def page(self, top_k: int, token: str) -> pb.SearchResponse:
        offset = int(token or 0)
        chosen = IDS[offset : offset + top_k]
        hits = [
            pb.Hit(id=i, uri=f"/photos/{i}.jpg", score=1 - n / 100, labels=["x"], metadata=pb.ImageMetadata(width=640, height=480, bytes=1000, format="JPEG"))
            for n, i in enumerate(chosen, offset)
        ]
        hits[0].metadata.capture_time.FromDatetime(SHOT)
        more = offset + top_k < len(IDS)
        return pb.SearchResponse(hits=hits, model_id="m", collection=self.name, cutoff=pb.CUTOFF_NONE, next_page_token=str(offset + top_k) if more else "")

    def SearchText(self, request: pb.SearchTextRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        self.record(context, request)
        return self.page(request.top_k, request.page_token)

    def SearchImage(self, request: pb.SearchImageRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        self.record(context, request)
        return self.page(request.top_k, request.page_token)

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        self.record(context, request)
        return self.page(request.top_k, request.page_token)

    def SearchBatch(self, request: pb.SearchBatchRequest, context: grpc.ServicerContext) -> pb.SearchBatchResponse:
        self.record(context, request)
        results = [
            pb.SearchBatchResult(error=pb.SearchError(code=3, status="INVALID_ARGUMENT", message="terms[0]: no term"))
            if not one.terms
            else pb.SearchBatchResult(response=self.page(one.top_k, one.page_token))
            for one in request.requests
        ]
        return pb.SearchBatchResponse(results=results)

    def FindDuplicates(self, request: pb.FindDuplicatesRequest, context: grpc.ServicerContext) -> Iterator[pb.FindDuplicatesResponse]:
        self.record(context, request)
        start = int(request.page_token or 0)
        end = min(len(IDS), start + (request.max_images or len(IDS)))
        for n in range(start, end, 2):
            yield pb.FindDuplicatesResponse(pairs=[pb.DuplicatePair(a=IDS[n], b=IDS[n] + "-copy", score=0.99)], scanned=n + 1, total=len(IDS))
        yield pb.FindDuplicatesResponse(scanned=end, total=len(IDS), next_page_token=str(end) if end < len(IDS) else "")

    def UpsertImages(self, request: pb.UpsertImagesRequest, context: grpc.ServicerContext) -> pb.UpsertImagesResponse:
        self.record(context, request)
        results = [pb.ItemResult(id=item.id, ok=bool(item.content), error="" if item.content else "empty") for item in request.items]
        return pb.UpsertImagesResponse(results=results, upserted=sum(r.ok for r in results), failed=sum(not r.ok for r in results))

    def GetIndexInfo(self, request: pb.GetIndexInfoRequest, context: grpc.ServicerContext) -> pb.GetIndexInfoResponse:
        self.record(context, request)
        return pb.GetIndexInfoResponse(count=len(IDS), model_id="m", dimension=4, collection=self.name, alias="images")

    def ListLabels(self, request: pb.ListLabelsRequest, context: grpc.ServicerContext) -> pb.ListLabelsResponse:
        self.record(context, request)
        return pb.ListLabelsResponse(labels=["x"], complete=True)

    def EmbedText(self, request: pb.EmbedTextRequest, context: grpc.ServicerContext) -> pb.EmbedTextResponse:
        self.record(context, request)
        return pb.EmbedTextResponse(embeddings=[pb.Embedding(values=[1, 0, 0, 0]) for _ in request.texts], model_id="m", dimension=4)


class Served:
    def __init__(self, servicer: Scripted) -> None:
        self.servicer = servicer
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_SearchServiceServicer_to_server(servicer, self.server)
        pb_grpc.add_IndexServiceServicer_to_server(servicer, self.server)
        pb_grpc.add_EmbeddingServiceServicer_to_server(servicer, self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()


@pytest.fixture()
def served() -> Iterator[Served]:
    one = Served(Scripted("one"))
    yield one
    one.server.stop(None)


@pytest.fixture()
def pair() -> Iterator[tuple[Served, Served]]:
    down, up = Served(Scripted("down", unavailable=True)), Served(Scripted("up"))
    yield down, up
    down.server.stop(None)
    up.server.stop(None)


def test_the_token_and_the_deadlines_reach_the_server(served: Served) -> None:
    with Client(served.address, token="s3cret", timeout=30) as client:
        client.search_text("a dog", top_k=3)
        client.info(timeout=5)
        list(client.find_duplicates())  # a server-streaming call carries it too
    calls = served.servicer.calls
    assert all(call["metadata"].get("authorization") == "Bearer s3cret" for call in calls), [call["metadata"] for call in calls]
    assert calls[0]["remaining"] > 10 and calls[1]["remaining"] < 6


def test_results_are_typed_and_keep_the_raw_response(served: Served) -> None:
    with Client(served.address) as client:
        result = client.search_text("a dog", top_k=3, filter=Filter(all_of=["x"], width=(100, None)), cutoff="autocut")
    assert result.ids == IDS[:3] and result.next_page_token == "3" and result.cutoff == "none" and result.collection == "one"
    first = result.hits[0]
    assert first.labels == ("x",) and first.metadata and first.metadata.width == 640 and first.metadata.capture_time == SHOT
    assert result.hits[1].metadata and result.hits[1].metadata.capture_time is None
    assert isinstance(result.raw, pb.SearchResponse) and result.raw.hits[0].id == first.id
    with pytest.raises(FrozenInstanceError):
        first.score = 2  # type: ignore[misc]
    sent = served.servicer.calls[0]["request"]
    assert sent.cutoff == pb.CUTOFF_AUTOCUT and list(sent.filter.labels.all_of) == ["x"] and sent.filter.metadata.width.min == 100
    assert not sent.filter.metadata.width.HasField("max") and not sent.HasField("min_score")


def test_the_page_iterators_follow_next_page_token(served: Served) -> None:
    with Client(served.address) as client:
        everything = list(client.iter_search_text("a dog", page_size=10))
        capped = list(client.iter_search(["a dog", Term(text="a cat", weight=-0.5)], page_size=4, max_results=9))
        by_id = list(client.iter_search_image(id="img-00", page_size=30))
    assert [hit.id for hit in everything] == IDS
    assert [hit.id for hit in capped] == IDS[:9] and [hit.id for hit in by_id] == IDS
    sizes = [(call["request"].top_k, call["request"].page_token) for call in served.servicer.calls]
    assert sizes[:3] == [(10, ""), (10, "10"), (10, "20")]
    assert sizes[3:6] == [(4, ""), (4, "4"), (1, "8")], "the last page asks only for what max_results leaves"
    terms = served.servicer.calls[3]["request"].terms
    assert terms[0].text == "a dog" and not terms[0].HasField("weight") and terms[1].weight == -0.5


def scripted_pages(*pages: tuple[list[str], str]) -> list[SearchResult]:
    """``SearchResult``s of the given hit ids and next_page_tokens."""
    return [SearchResult.from_proto(pb.SearchResponse(hits=[pb.Hit(id=i, score=0.5) for i in ids], next_page_token=token)) for ids, token in pages]


async def test_the_iterators_go_on_past_an_empty_page_that_has_a_token() -> None:
    # The server answers a page whose fetched hits all ranked before the cursor with no hits and a token
    # (search.pages): only an empty token ends the walk.
    script = scripted_pages((["a", "b"], "t1"), ([], "t2"), (["c"], ""))
    asked: list[str] = []

    def call(top_k: int, token: str) -> SearchResult:
        asked.append(token)
        return script[len(asked) - 1]

    async def acall(top_k: int, token: str) -> SearchResult:
        return call(top_k, token)

    with Client("127.0.0.1:1") as client:
        walked = [hit.id for page in client.pages(call, page_size=2) for hit in page.hits]
    assert walked == ["a", "b", "c"] and asked == ["", "t1", "t2"]
    asked.clear()
    async with AsyncClient("127.0.0.1:1") as aclient:
        awalked = [hit.id async for page in aclient.pages(acall, page_size=2) for hit in page.hits]
    assert awalked == ["a", "b", "c"] and asked == ["", "t1", "t2"]


async def test_the_async_client_pages_and_streams_with_the_token(served: Served) -> None:
    async with AsyncClient(served.address, token="s3cret") as client:
        hits = [hit.id async for hit in client.iter_search_text("a dog", page_size=7, max_results=20)]
        pairs = [pair async for pair in client.find_duplicates(max_images=10)]
        info = await client.info()
        embedded = await client.embed_text(["a", "b"])
    assert hits == IDS[:20] and info.count == 25 and embedded.vectors == ((1, 0, 0, 0), (1, 0, 0, 0))
    assert [pair.a for pair in pairs] == IDS[::2], "three streams of 10 images, each going on from the last one's token"
    assert all(call["metadata"].get("authorization") == "Bearer s3cret" for call in served.servicer.calls)


def test_find_duplicates_follows_the_streams_tokens(served: Served) -> None:
    with Client(served.address) as client:
        pairs = list(client.find_duplicates(0.9, max_images=10))
        chunks = list(client.duplicate_chunks(max_images=10))
    assert [pair.a for pair in pairs] == IDS[::2] and pairs[0].b == "img-00-copy" and pairs[0].score == pytest.approx(0.99)
    tokens = [call["request"].page_token for call in served.servicer.calls[:3]]
    assert tokens == ["", "10", "20"] and chunks[-1].next_page_token == "10"


def test_search_batch_gives_a_result_or_a_failure_per_query(served: Served) -> None:
    with Client(served.address) as client:
        results = client.search_batch([Query(["a dog"], top_k=2), Query([]), Query([Term(vector=[0.1, 0.2])], top_k=1)])
    assert [type(result).__name__ for result in results] == ["SearchResult", "SearchFailure", "SearchResult"]
    failure = results[1]
    assert isinstance(failure, SearchFailure) and failure.code == grpc.StatusCode.INVALID_ARGUMENT and "terms[0]" in failure.message
    assert list(served.servicer.calls[0]["request"].requests[2].terms[0].vector.values) == pytest.approx([0.1, 0.2])


def test_upsert_sends_items_with_their_modification_time(served: Served) -> None:
    moment = datetime(2023, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    with Client(served.address) as client:
        outcome = client.upsert([ImageItem("a", b"jpeg", uri="/a.jpg", labels=["x"], modified_time=moment), ImageItem("b", b"")])
    assert (outcome.upserted, outcome.failed) == (1, 1) and outcome.results[1].error == "empty"
    sent = served.servicer.calls[0]["request"].items[0]
    assert sent.modified_time.ToDatetime(tzinfo=UTC) == moment and not served.servicer.calls[0]["request"].items[1].HasField("modified_time")
    with pytest.raises(ValueError, match="timezone-aware"):
        ImageItem("c", b"x", modified_time=datetime(2023, 1, 1)).to_proto()  # the naive datetime under test


def test_calls_go_round_robin_and_unavailable_is_retried_on_the_other_gateway(pair: tuple[Served, Served]) -> None:
    down, up = pair
    with Client([down.address, up.address], timeout=10) as client:
        results = [client.search_text("a dog", top_k=1) for _ in range(20)]
    assert all(result.collection == "up" for result in results)
    assert down.servicer.calls, "no call reached the first gateway: no round robin"
    assert len(up.servicer.calls) == 20


def test_without_retries_the_unavailable_gateway_fails_calls(pair: tuple[Served, Served]) -> None:
    """The other side of the test above: with one attempt, the calls that land on the gateway going away fail."""
    down, up = pair
    codes = []
    with Client([down.address, up.address], timeout=10, attempts=1) as client:
        for _ in range(20):
            try:
                client.search_text("a dog", top_k=1)
            except grpc.RpcError as error:
                codes.append(error.code())
    assert codes and set(codes) == {grpc.StatusCode.UNAVAILABLE} and len(codes) == len(down.servicer.calls)


def test_tls_and_mutual_tls(tmp_path: Path) -> None:
    ours = Authority(tmp_path / "ca")
    server_files, client_files = ours.issue("server", server=True), ours.issue("client", server=False)
    servicer = Scripted("tls")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_IndexServiceServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(server_files.key.read_bytes(), server_files.cert.read_bytes())], root_certificates=ours.ca.read_bytes(), require_client_auth=True
    )
    address = f"127.0.0.1:{server.add_secure_port('127.0.0.1:0', credentials)}"
    server.start()
    try:
        mutual = Tls.from_files(ca=ours.ca, cert=client_files.cert, key=client_files.key)
        with Client(address, token="over-tls", tls=mutual, timeout=10) as client:
            assert client.info().collection == "tls"
        with Client(address, tls=Tls.from_files(ca=ours.ca, cert=client_files.cert, key=client_files.key, server_name="localhost"), timeout=10) as named:
            assert named.info().count == 25
        refused = []
        for tls in (Tls.from_files(ca=ours.ca), Tls.from_files(ca=ours.ca, cert=client_files.cert, key=client_files.key, server_name="elsewhere.test")):
            with Client(address, tls=tls, timeout=5, attempts=1) as client, pytest.raises(grpc.RpcError) as caught:
                client.info()
            refused.append(caught.value.code())
        assert refused == [grpc.StatusCode.UNAVAILABLE] * 2, "no client certificate, and a certificate checked for another name"
        assert servicer.calls[0]["metadata"]["authorization"] == "Bearer over-tls" and len(servicer.calls) == 2
    finally:
        server.stop(None)


def test_the_page_calls_the_gateway_through_the_async_client_with_its_token(served: Served) -> None:
    """A regression guard for the page's move to AsyncClient (it passes on the old page too, which called the stubs)."""
    from starlette.testclient import TestClient

    from core.settings import WebSettings
    from web.app import create_app

    with TestClient(create_app(WebSettings(gateway=served.address), token="page-token")) as page:
        answer = page.get("/api/search", params={"q": "a dog", "k": "3", "label": "x", "cutoff": "autocut"})
        info = page.get("/api/info")
    assert answer.status_code == 200 and [hit["id"] for hit in answer.json()["hits"]] == IDS[:3] and answer.json()["cutoff"] == "none"
    assert info.status_code == 200 and info.json()["count"] == 25 and info.json()["labels"] == ["x"]
    sent = served.servicer.calls[0]
    assert sent["metadata"]["authorization"] == "Bearer page-token" and sent["remaining"] <= WebSettings().timeout_s
    assert sent["request"].cutoff == pb.CUTOFF_AUTOCUT and list(sent["request"].filter.labels.all_of) == ["x"]


def test_inputs_are_checked_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="exactly one of text, image, id or vector"):
        Term(text="a", id="b")
    with pytest.raises(ValueError, match="finite and not 0"):
        Term(text="a", weight=0)
    with pytest.raises(ValueError, match="exactly one of image"):
        Client("127.0.0.1:1").search_image(b"x", id="y")
    with pytest.raises(TypeError, match="list of strings"):
        Client("127.0.0.1:1").embed_text("one text")  # a str is a Sequence[str]: the mistake the check catches
    with pytest.raises(ValueError, match="cutoff must be"):
        Client("127.0.0.1:1").search_text("a", cutoff="sharp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mutual TLS needs both"):
        Tls(certificate_chain=b"pem")
    with pytest.raises(ValueError, match="between 1 and 5"):
        channel_options(0)
    assert not Filter().to_proto().HasField("labels") and not Filter().to_proto().HasField("metadata")


def test_several_gateways_make_one_target() -> None:
    assert target("dns:///gateway-headless.ns.svc:50051") == "dns:///gateway-headless.ns.svc:50051"
    assert target(["10.0.0.1:50051", "10.0.0.2:50051"]) == "ipv4:10.0.0.1:50051,10.0.0.2:50051"
    assert target(["[::1]:50051", "[::2]:50051"]) == "ipv6:[::1]:50051,[::2]:50051"
    assert target(["gateway:50051"]) == "gateway:50051"
    with pytest.raises(ValueError, match="dns:///"):
        target(["gateway-a:50051", "gateway-b:50051"])
    with pytest.raises(ValueError, match="one family"):
        target(["10.0.0.1:1", "[::1]:1"])
