"""The bad-input table: each case gets the right status and a clear message, and the server keeps serving."""

from __future__ import annotations

import io
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from PIL import Image

from core.filters import MAX_FILTER_IDS, MAX_FILTER_LABELS
from core.index import ImageIndex
from core.records import MAX_ID_BYTES, MAX_LABEL_BYTES
from devstack.stack import LocalStack
from export.samples import sample_photos
from t2i.client import GatewayClient
from tests.support.images import png_bomb
from tests.support.stack import assert_serving
from text2image.v1 import text2image_pb2 as pb


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def expect(code: grpc.StatusCode, fragment: str, call: Callable[[], object]) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    assert fragment in (caught.value.details() or "")


@pytest.fixture(autouse=True)
def still_serving(stack: LocalStack) -> object:
    yield
    assert_serving(stack)


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_empty_or_whitespace_query(client: GatewayClient, query: str) -> None:
    expect(grpc.StatusCode.INVALID_ARGUMENT, "query is empty", lambda: client.search_text(query, top_k=3))


def test_long_query_is_truncated_and_reported(client: GatewayClient) -> None:
    response = client.search_text("a dog running on the beach " * 40, top_k=3)
    assert response.query_truncated and response.query_tokens == 77


def test_queries_are_bounded_in_size_and_cut_before_tokenizing(client: GatewayClient) -> None:
    # 15 KB: under the SearchText cap (16 KiB), over what CLIP could use: cut before tokenizing, reported.
    cut = client.search_text("a dog running on the beach " * 550, top_k=3)
    assert cut.query_truncated and cut.query_tokens == 77
    # 10 MB: refused before it is parsed (the cap is what a query and a filter at their limits take).
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, "SearchText requests are limited to 5687 KiB", lambda: client.search_text("x" * 10_000_000, top_k=3))
    # 1 MB: under that cap, over the query's own limit.
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, "queries are limited to 16,384 bytes", lambda: client.search_text("x" * 1_000_000, top_k=3))
    expect(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "EmbedText requests are limited to",
        lambda: client.embedding.EmbedText(pb.EmbedTextRequest(texts=["y" * 300_000] * 2), timeout=20),
    )


def test_invalid_utf8_on_the_wire_is_invalid_argument(client: GatewayClient) -> None:
    raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = client.channel.unary_unary(
        "/text2image.v1.SearchService/SearchText", request_serializer=None, response_deserializer=None
    )
    valid = pb.SearchTextRequest(query="ab", top_k=3).SerializeToString()
    expect(grpc.StatusCode.INVALID_ARGUMENT, "must be valid UTF-8", lambda: raw(valid.replace(b"ab", b"\xff\xfe"), timeout=20))


@pytest.mark.parametrize("top_k", [0, -5, 1001, 2**31 - 1])
def test_bad_top_k_names_the_range(client: GatewayClient, top_k: int) -> None:
    expect(grpc.StatusCode.INVALID_ARGUMENT, "between 1 and 1000", lambda: client.search_text("red car", top_k=top_k))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "between 1 and 1000", lambda: client.search_image(top_k=top_k, image=png(64, 64)))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"definitely not an image", "not a recognized image"),
        (png(64, 64)[:60], "corrupt or truncated"),
        (png(1, 1), "at least 16"),
        (png_bomb(30000, 30000), "decompression bomb"),
        (b"", "empty"),
    ],
    ids=["not-image", "truncated", "1x1", "30000x30000", "empty"],
)
def test_bad_image_bytes(client: GatewayClient, data: bytes, reason: str) -> None:
    expect(grpc.StatusCode.INVALID_ARGUMENT, reason, lambda: client.search_image(top_k=3, image=data))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "images[1]: ", lambda: client.embedding.EmbedImage(pb.EmbedImageRequest(images=[png(32, 32), data]), timeout=20))


def test_bad_image_in_a_batch_fails_that_item_alone(client: GatewayClient, index: ImageIndex) -> None:
    items = [
        pb.ImageItem(id="bad-input/good", content=png(40, 40)),
        pb.ImageItem(id="bad-input/bomb", content=png_bomb(30000, 30000)),
        pb.ImageItem(id="bad-input/tiny", content=png(1, 1)),
        pb.ImageItem(id="", content=png(40, 40)),
    ]
    response = client.index.UpsertImages(pb.UpsertImagesRequest(items=items), timeout=30)
    assert [r.ok for r in response.results] == [True, False, False, False]
    assert "decompression bomb" in response.results[1].error and "at least 16" in response.results[2].error and "id is empty" in response.results[3].error
    assert set(index.hashes(index.ensure_active(), ["bad-input/good", "bad-input/bomb", "bad-input/tiny"])) == {"bad-input/good"}


def test_unknown_id(client: GatewayClient) -> None:
    expect(grpc.StatusCode.NOT_FOUND, "no indexed image has id 'no/such/image.jpg'", lambda: client.search_image(top_k=3, id="no/such/image.jpg"))


def test_search_image_needs_a_source(client: GatewayClient) -> None:
    expect(grpc.StatusCode.INVALID_ARGUMENT, "set either image", lambda: client.search_image(top_k=3))


@pytest.mark.parametrize("value", ['x" or id != "', '"] ) or (id != "', "\\", "a' || 1==1 || '", 'quote"inside'])
def test_filter_values_are_literals_never_injected(client: GatewayClient, index: ImageIndex, value: str) -> None:
    photo = sample_photos(1)[0]
    item = pb.ImageItem(id=f"inject/{len(value)}/{abs(hash(value))}", content=photo.read_bytes(), uri="mem://inject", labels=[value])
    assert client.index.UpsertImages(pb.UpsertImagesRequest(items=[item]), timeout=30).results[0].ok
    exact = client.search_text("anything", top_k=50, filter=pb.Filter(labels=pb.LabelFilter(any_of=[value])))
    assert [h.id for h in exact.hits] == [item.id]  # only the image carrying that exact label
    assert list(exact.hits[0].labels) == [value]
    by_id = client.search_text("anything", top_k=50, filter=pb.Filter(ids=[value]))
    assert len(by_id.hits) == 0  # an injected 'or' would have matched everything


def test_bad_min_score_and_batches(client: GatewayClient) -> None:
    expect(grpc.StatusCode.INVALID_ARGUMENT, "between -1 and 1", lambda: client.search_text("x", top_k=1, min_score=2.0))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "between 1 and 16", lambda: client.embedding.EmbedText(pb.EmbedTextRequest(texts=[]), timeout=10))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "texts[1]", lambda: client.embedding.EmbedText(pb.EmbedTextRequest(texts=["ok", " "]), timeout=10))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "between 1 and 16", lambda: client.index.DeleteImages(pb.DeleteImagesRequest(ids=["a"] * 17), timeout=10))


@pytest.fixture(scope="module")
def labelled(client: GatewayClient) -> str:
    """An indexed image with the label 'big-filter', whose id is returned."""
    item = pb.ImageItem(id="big-filter/photo", content=sample_photos(1)[0].read_bytes(), uri="mem://big-filter", labels=["big-filter"])
    assert client.index.UpsertImages(pb.UpsertImagesRequest(items=[item]), timeout=30).results[0].ok
    return item.id


def test_a_large_filter_within_its_limits_is_served(client: GatewayClient, labelled: str) -> None:
    # Before: RESOURCE_EXHAUSTED, "SearchText requests are limited to 16 KiB" (and at most 256 values a list behind it).
    ids = [labelled] + [f"big-filter/{n:05d}-" + "i" * (MAX_ID_BYTES - 17) for n in range(MAX_FILTER_IDS - 1)]  # 10,000 ids, most of 512 bytes
    assert len(ids) == MAX_FILTER_IDS and max(len(i.encode()) for i in ids) == MAX_ID_BYTES
    by_ids = client.search_text("a photo", top_k=50, filter=pb.Filter(ids=ids))
    assert [h.id for h in by_ids.hits] == [labelled]
    labels = [f"{n:04d}" + "l" * (MAX_LABEL_BYTES - 4) for n in range(MAX_FILTER_LABELS - 1)] + ["big-filter"]  # 5,000 labels, most of 128 bytes
    by_labels = client.search_text("a photo", top_k=50, filter=pb.Filter(labels=pb.LabelFilter(any_of=labels)))
    assert [h.id for h in by_labels.hits] == [labelled]
    both = client.search_text("a photo", top_k=50, filter=pb.Filter(ids=ids, labels=pb.LabelFilter(all_of=["big-filter"], none_of=labels[:-1])))
    assert [h.id for h in both.hits] == [labelled]


def test_each_part_of_a_filter_over_its_limit_is_refused_with_its_limit(client: GatewayClient) -> None:
    too_many_ids = pb.Filter(ids=[f"id-{n}" for n in range(MAX_FILTER_IDS + 1)])
    expect(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "filter.ids holds 10,001 ids; at most 10,000 are allowed",
        lambda: client.search_text("x", top_k=3, filter=too_many_ids),
    )
    too_many_labels = pb.Filter(labels=pb.LabelFilter(any_of=["a"] * 3000, none_of=["b"] * (MAX_FILTER_LABELS - 2999)))
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, "filter.labels holds 5,001 labels", lambda: client.search_text("x", top_k=3, filter=too_many_labels))
    expect(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "at most 10,000 are allowed",
        lambda: client.search_image(top_k=3, image=png(32, 32), filter=too_many_ids),  # SearchImage has the same limits
    )
    long_id = pb.Filter(ids=["i" * (MAX_ID_BYTES + 1)])
    expect(grpc.StatusCode.INVALID_ARGUMENT, f"is longer than {MAX_ID_BYTES} bytes", lambda: client.search_text("x", top_k=3, filter=long_id))
    long_label = pb.Filter(labels=pb.LabelFilter(all_of=["l" * (MAX_LABEL_BYTES + 1)]))
    expect(grpc.StatusCode.INVALID_ARGUMENT, f"is longer than {MAX_LABEL_BYTES} bytes", lambda: client.search_text("x", top_k=3, filter=long_label))
