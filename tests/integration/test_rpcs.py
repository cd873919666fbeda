"""Every RPC of the three services over real gRPC, plus health and reflection."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from core.index import ImageIndex
from devstack.stack import LocalStack
from export.samples import sample_photos
from t2i.client import GatewayClient
from tests.support.stack import assert_serving
from text2image.v1 import text2image_pb2 as pb

LABEL = "rpc-suite"


@pytest.fixture(scope="module")
def photos(client: GatewayClient) -> list[Path]:
    paths = sample_photos(8)
    items = [
        pb.ImageItem(id=f"rpc/{p.name}", content=p.read_bytes(), uri=str(p), labels=[LABEL, "animal" if p.stem in ("chelsea", "horse") else "other"])
        for p in paths
    ]
    response = client.index.UpsertImages(pb.UpsertImagesRequest(items=items), timeout=60)
    assert response.upserted == len(paths) and response.failed == 0
    return paths


def only_suite(**labels: list[str]) -> pb.Filter:
    return pb.Filter(labels=pb.LabelFilter(all_of=[LABEL], **labels))


def test_search_text_ranks_and_reports_model(client: GatewayClient, photos: list[Path], tiny_repo: Path) -> None:
    response = client.search_text("a cat on a sofa", top_k=5, filter=only_suite())
    assert response.model_id == "random:tiny"
    assert len(response.hits) == 5
    scores = [h.score for h in response.hits]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    assert all(h.id.startswith("rpc/") and LABEL in h.labels for h in response.hits)
    assert response.query_tokens == 7 and not response.query_truncated
    assert response.collection.startswith("t2i_test_")


def test_search_text_scores_equal_embedding_dot_products(client: GatewayClient, photos: list[Path]) -> None:
    text = client.embedding.EmbedText(pb.EmbedTextRequest(texts=["red car"]), timeout=20).embeddings[0].values
    images = client.embedding.EmbedImage(pb.EmbedImageRequest(images=[p.read_bytes() for p in photos]), timeout=60).embeddings
    expected = sorted(((float(np.dot(text, e.values)), f"rpc/{p.name}") for e, p in zip(images, photos, strict=True)), reverse=True)
    response = client.search_text("red car", top_k=len(photos), filter=only_suite())
    assert [h.id for h in response.hits] == [name for _, name in expected]
    np.testing.assert_allclose([h.score for h in response.hits], [s for s, _ in expected], atol=1e-4)


def test_min_score_drops_weaker_hits(client: GatewayClient, photos: list[Path]) -> None:
    everything = client.search_text("red car", top_k=8, filter=only_suite())
    cut = everything.hits[2].score
    kept = client.search_text("red car", top_k=8, filter=only_suite(), min_score=cut)
    assert [h.id for h in kept.hits] == [h.id for h in everything.hits if h.score >= cut]


def test_search_image_by_bytes_finds_itself_first(client: GatewayClient, photos: list[Path]) -> None:
    response = client.search_image(top_k=3, image=photos[1].read_bytes(), filter=only_suite())
    assert response.hits[0].id == f"rpc/{photos[1].name}"
    assert response.hits[0].score == pytest.approx(1.0, abs=1e-3)


def test_search_image_by_id_with_and_without_self(client: GatewayClient, photos: list[Path]) -> None:
    with_self = client.search_image(top_k=3, id=f"rpc/{photos[0].name}", filter=only_suite())
    assert with_self.hits[0].id == f"rpc/{photos[0].name}"
    without = client.search_image(top_k=3, id=f"rpc/{photos[0].name}", filter=only_suite(), exclude_self=True)
    assert f"rpc/{photos[0].name}" not in [h.id for h in without.hits] and len(without.hits) == 3


def test_label_filters(client: GatewayClient, photos: list[Path]) -> None:
    animals = client.search_text("anything", top_k=8, filter=only_suite(any_of=["animal"]))
    assert {h.id for h in animals.hits} == {"rpc/chelsea.png", "rpc/horse.png"}
    others = client.search_text("anything", top_k=8, filter=only_suite(none_of=["animal"]))
    assert len(others.hits) == 6 and not {h.id for h in others.hits} & {"rpc/chelsea.png", "rpc/horse.png"}
    by_id = client.search_text("anything", top_k=8, filter=pb.Filter(ids=["rpc/coffee.png", "rpc/nope"]))
    assert [h.id for h in by_id.hits] == ["rpc/coffee.png"]
    by_uri = client.search_text("anything", top_k=8, filter=pb.Filter(uri_prefix=str(photos[0].parent) + "/co"))
    assert {h.id for h in by_uri.hits} == {"rpc/coffee.png", "rpc/coins.png"} & {f"rpc/{p.name}" for p in photos}


def test_embed_text_and_image_are_normalized(client: GatewayClient, photos: list[Path]) -> None:
    text = client.embedding.EmbedText(pb.EmbedTextRequest(texts=["red car", "word " * 100]), timeout=20)
    assert text.dimension == 32 and text.model_id == "random:tiny" and len(text.embeddings) == 2
    assert [e.truncated for e in text.embeddings] == [False, True]
    for embedding in text.embeddings:
        assert np.linalg.norm(embedding.values) == pytest.approx(1.0, abs=1e-5)
    image = client.embedding.EmbedImage(pb.EmbedImageRequest(images=[photos[0].read_bytes()]), timeout=20)
    assert image.dimension == 32 and np.linalg.norm(image.embeddings[0].values) == pytest.approx(1.0, abs=1e-5)


def test_upsert_is_per_item_and_idempotent(client: GatewayClient, index: ImageIndex, photos: list[Path]) -> None:
    good = pb.ImageItem(id="rpc/extra", content=photos[2].read_bytes(), uri="mem://extra", labels=[LABEL])
    bad = pb.ImageItem(id="rpc/bad", content=b"garbage", uri="mem://bad")
    response = client.index.UpsertImages(pb.UpsertImagesRequest(items=[good, bad]), timeout=30)
    assert [(r.id, r.ok) for r in response.results] == [("rpc/extra", True), ("rpc/bad", False)]
    assert "not a recognized image" in response.results[1].error
    assert response.upserted == 1 and response.failed == 1
    again = client.index.UpsertImages(pb.UpsertImagesRequest(items=[good]), timeout=30)
    assert again.results[0].unchanged and again.upserted == 0
    collection = index.ensure_active()
    assert "rpc/extra" in index.hashes(collection, ["rpc/extra", "rpc/bad"]) and "rpc/bad" not in index.hashes(collection, ["rpc/bad"])
    deleted = client.index.DeleteImages(pb.DeleteImagesRequest(ids=["rpc/extra", "rpc/never-existed"]), timeout=30)
    assert deleted.deleted == 1
    assert index.hashes(collection, ["rpc/extra"]) == {}


def test_get_index_info(client: GatewayClient, index: ImageIndex, photos: list[Path], tiny_repo: Path) -> None:
    info = client.info()
    assert info.model_id == "random:tiny" and info.dimension == 32 and info.alias == "t2i_test"
    assert info.collection == index.active_collection()
    assert info.count == index.count(info.collection) >= len(photos)
    assert len(info.model_checksum) == 64


def test_get_images_returns_indexed_records_in_order(client: GatewayClient, photos: list[Path]) -> None:
    ids = [f"rpc/{photos[1].name}", "rpc/not-indexed", f"rpc/{photos[0].name}"]
    records = client.index.GetImages(pb.GetImagesRequest(ids=ids), timeout=20).images
    assert [(r.id, r.uri) for r in records] == [(ids[0], str(photos[1])), (ids[2], str(photos[0]))]
    assert LABEL in records[0].labels
    with pytest.raises(grpc.RpcError) as caught:
        client.index.GetImages(pb.GetImagesRequest(ids=[""]), timeout=20)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "id is empty" in (caught.value.details() or "")


def test_list_labels(client: GatewayClient, photos: list[Path]) -> None:
    everything = client.index.ListLabels(pb.ListLabelsRequest(), timeout=20)
    assert {LABEL, "animal", "other"} <= set(everything.labels) and everything.complete
    assert list(everything.labels) == sorted(everything.labels)
    first = client.index.ListLabels(pb.ListLabelsRequest(max_rows=1), timeout=20)
    assert not first.complete and set(first.labels) <= set(everything.labels)
    with pytest.raises(grpc.RpcError) as caught:
        client.index.ListLabels(pb.ListLabelsRequest(max_rows=-1), timeout=20)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_rows" in (caught.value.details() or "")


def test_reflection_lists_services(stack: LocalStack) -> None:
    with grpc.insecure_channel(stack.gateway_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"text2image.v1.SearchService", "text2image.v1.EmbeddingService", "text2image.v1.IndexService", "grpc.health.v1.Health"} <= names
    assert_serving(stack)


def gateway_metrics(stack: LocalStack) -> dict[str, float]:
    """The gateway's Prometheus samples, by name with labels."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {name: float(value) for name, _, value in (line.rpartition(" ") for line in text.splitlines() if line and not line.startswith("#"))}


def test_metrics_count_requests_by_code(stack: LocalStack, client: GatewayClient, photos: list[Path]) -> None:
    before = gateway_metrics(stack)  # the session's earlier tests counted too: only what this test adds is checked
    first = client.search_text("metrics probe", top_k=3)
    second = client.search_text("  Metrics   PROBE ", top_k=3)  # same tokens: served from the embedding cache
    assert [(h.id, h.score) for h in first.hits] == [(h.id, h.score) for h in second.hits]
    assert second.query_tokens == first.query_tokens
    with pytest.raises(grpc.RpcError) as refused:
        client.search_text("", top_k=1)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = gateway_metrics(stack)
    added = {
        name: after.get(name, 0.0) - before.get(name, 0.0)
        for name in (
            't2i_requests_total{code="OK",method="SearchText"}',
            't2i_requests_total{code="INVALID_ARGUMENT",method="SearchText"}',
            't2i_downstream_seconds_count{operation="encode_text",outcome="ok",target="triton"}',
            't2i_downstream_seconds_count{operation="search",outcome="ok",target="milvus"}',
            't2i_embedding_cache_total{result="miss"}',
            't2i_embedding_cache_total{result="hit"}',
        )
    }
    assert added == {
        't2i_requests_total{code="OK",method="SearchText"}': 2,
        't2i_requests_total{code="INVALID_ARGUMENT",method="SearchText"}': 1,
        't2i_downstream_seconds_count{operation="encode_text",outcome="ok",target="triton"}': 1,  # the second query never reached Triton
        't2i_downstream_seconds_count{operation="search",outcome="ok",target="milvus"}': 2,
        't2i_embedding_cache_total{result="miss"}': 1,
        't2i_embedding_cache_total{result="hit"}': 1,
    }
