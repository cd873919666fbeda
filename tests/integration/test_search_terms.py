"""Search (combined terms: text, image, id, vector) and SearchBatch over the real stack (tiny random CLIP, real Triton and Milvus).

Random weights make rankings meaningless, but not the maths: each expectation is computed here
from EmbedText/EmbedImage and compared with what the gateway ranked. The negative-term effect on
a trained model is tests/integration/test_negative_terms.py.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from devstack.stack import LocalStack
from export.samples import sample_photos
from t2i.client import GatewayClient
from tests.support.stack import assert_serving
from text2image.v1 import text2image_pb2 as pb

LABEL = "terms-suite"
ONLY = pb.Filter(labels=pb.LabelFilter(all_of=[LABEL]))


def ident(path: Path) -> str:
    return f"terms/{path.name}"


@pytest.fixture(scope="module")
def photos(client: GatewayClient) -> list[Path]:
    paths = sample_photos(8)
    items = [pb.ImageItem(id=ident(p), content=p.read_bytes(), uri=str(p), labels=[LABEL]) for p in paths]
    response = client.index.UpsertImages(pb.UpsertImagesRequest(items=items), timeout=120)
    assert response.upserted + sum(r.unchanged for r in response.results) == len(paths) and response.failed == 0
    return paths


@pytest.fixture(scope="module")
def vectors(client: GatewayClient, photos: list[Path]) -> dict[str, np.ndarray]:
    """Each photo's embedding, by id."""
    found = client.embedding.EmbedImage(pb.EmbedImageRequest(images=[p.read_bytes() for p in photos]), timeout=120).embeddings
    return {ident(p): np.asarray(e.values) for p, e in zip(photos, found, strict=True)}


def text_vector(client: GatewayClient, text: str) -> np.ndarray:
    return np.asarray(client.embedding.EmbedText(pb.EmbedTextRequest(texts=[text]), timeout=30).embeddings[0].values)


def search(client: GatewayClient, *terms: pb.QueryTerm, top_k: int = 8, **fields: object) -> pb.SearchResponse:
    return client.search.Search(pb.SearchRequest(terms=list(terms), top_k=top_k, filter=ONLY, **fields), timeout=60)  # type: ignore[arg-type]


def expected_ranking(q: np.ndarray, vectors: dict[str, np.ndarray], leave_out: tuple[str, ...] = ()) -> list[tuple[str, float]]:
    q = q / np.linalg.norm(q)
    return sorted(((name, float(np.dot(q, v))) for name, v in vectors.items() if name not in leave_out), key=lambda pair: -pair[1])


def refused(call: object, code: grpc.StatusCode, *needles: str) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    details = caught.value.details() or ""
    assert caught.value.code() == code, (caught.value.code(), details)
    assert all(needle in details for needle in needles), details
    return details


def test_a_vector_query_of_embed_text_s_output_ranks_as_search_text(client: GatewayClient, photos: list[Path]) -> None:
    plain = client.search_text("a red car", top_k=8, filter=ONLY)
    by_vector = search(client, pb.QueryTerm(vector=pb.Vector(values=text_vector(client, "a red car").tolist())))
    assert [h.id for h in by_vector.hits] == [h.id for h in plain.hits]
    np.testing.assert_allclose([h.score for h in by_vector.hits], [h.score for h in plain.hits], atol=1e-4)
    assert by_vector.query_tokens == 0 and by_vector.collection == plain.collection


def test_one_text_or_image_term_is_search_text_or_search_image(client: GatewayClient, photos: list[Path]) -> None:
    text = search(client, pb.QueryTerm(text="a red car"))
    plain = client.search_text("a red car", top_k=8, filter=ONLY)
    assert [(h.id, round(h.score, 4)) for h in text.hits] == [(h.id, round(h.score, 4)) for h in plain.hits]
    assert (text.query_tokens, text.query_truncated) == (plain.query_tokens, False)
    image = search(client, pb.QueryTerm(image=photos[2].read_bytes()))
    assert [h.id for h in image.hits] == [h.id for h in client.search_image(top_k=8, image=photos[2].read_bytes(), filter=ONLY).hits]
    assert image.hits[0].id == ident(photos[2])


def test_weighted_text_image_id_and_vector_terms_rank_by_the_documented_sum(client: GatewayClient, photos: list[Path], vectors: dict[str, np.ndarray]) -> None:
    text, image, kept = text_vector(client, "a cat on a sofa"), vectors[ident(photos[1])], vectors[ident(photos[3])]
    other = np.asarray([math.sin(i) for i in range(len(text))])  # any direction, not normalized
    terms = [
        pb.QueryTerm(text="a cat on a sofa", weight=1.5),
        pb.QueryTerm(image=photos[1].read_bytes(), weight=-0.5),
        pb.QueryTerm(id=ident(photos[3])),  # weight unset: 1
        pb.QueryTerm(vector=pb.Vector(values=other.tolist()), weight=0.25),
    ]
    response = search(client, *terms)
    q = 1.5 * text - 0.5 * image + kept + 0.25 * other / np.linalg.norm(other)
    expected = expected_ranking(q, vectors)
    assert [h.id for h in response.hits] == [name for name, _ in expected]
    np.testing.assert_allclose([h.score for h in response.hits], [s for _, s in expected], atol=2e-3)
    assert response.query_tokens > 2 and response.model_id == "random:tiny"


def test_exclude_ids_leaves_the_id_terms_images_out(client: GatewayClient, photos: list[Path], vectors: dict[str, np.ndarray]) -> None:
    ids = (ident(photos[0]), ident(photos[5]))
    terms = [pb.QueryTerm(id=ids[0]), pb.QueryTerm(id=ids[1], weight=0.5)]
    q = vectors[ids[0]] + 0.5 * vectors[ids[1]]
    with_ids = search(client, *terms)
    assert [h.id for h in with_ids.hits] == [name for name, _ in expected_ranking(q, vectors)] and set(ids) <= {h.id for h in with_ids.hits}
    without = search(client, *terms, exclude_ids=True)
    assert [h.id for h in without.hits] == [name for name, _ in expected_ranking(q, vectors, ids)]


def test_pages_of_a_combined_query(client: GatewayClient, photos: list[Path]) -> None:
    terms = [pb.QueryTerm(text="a horse"), pb.QueryTerm(text="grass", weight=-0.5)]
    whole = search(client, *terms)
    first = search(client, *terms, top_k=3)
    second = search(client, *terms, top_k=5, page_token=first.next_page_token)
    assert first.next_page_token and [h.id for h in [*first.hits, *second.hits]] == [h.id for h in whole.hits]
    refused(lambda: search(client, pb.QueryTerm(text="a horse"), top_k=3, page_token=first.next_page_token), grpc.StatusCode.INVALID_ARGUMENT, "page_token")


def test_search_batch_answers_in_order_with_per_search_errors(client: GatewayClient, stack: LocalStack, photos: list[Path]) -> None:
    good = pb.SearchRequest(terms=[pb.QueryTerm(text="a red car")], top_k=3, filter=ONLY)
    requests = [
        good,
        pb.SearchRequest(terms=[pb.QueryTerm(vector=pb.Vector(values=[1.0, 2.0]))], top_k=3),
        pb.SearchRequest(terms=[pb.QueryTerm(id=ident(photos[4]))], top_k=3, filter=ONLY),
        pb.SearchRequest(terms=[pb.QueryTerm(id="terms/no-such-image")], top_k=3),
        pb.SearchRequest(terms=[pb.QueryTerm(text="a red car")], top_k=3, cutoff=pb.CUTOFF_CALIBRATED),  # the tiny model has no threshold
        pb.SearchRequest(terms=[pb.QueryTerm(text="a horse"), pb.QueryTerm(text="a dog", weight=-1.0)], top_k=3, filter=ONLY),
        pb.SearchRequest(terms=[pb.QueryTerm(text="x")], top_k=3, cutoff=42),  # type: ignore[arg-type]
    ]
    results = client.search.SearchBatch(pb.SearchBatchRequest(requests=requests), timeout=60).results
    assert [r.WhichOneof("outcome") for r in results] == ["response", "error", "response", "error", "error", "response", "error"]
    assert [h.id for h in results[0].response.hits] == [h.id for h in client.search.Search(good, timeout=30).hits]
    assert results[2].response.hits[0].id == ident(photos[4])
    expected = {
        1: (3, "INVALID_ARGUMENT", "terms[0].vector: has 2 values"),
        3: (5, "NOT_FOUND", "terms[0].id: no indexed image has id 'terms/no-such-image'"),
        4: (9, "FAILED_PRECONDITION", "no calibrated threshold"),
        6: (3, "INVALID_ARGUMENT", "cutoff: unknown value 42"),
    }
    for position, (code, status, needle) in expected.items():
        error = results[position].error
        assert (error.code, error.status) == (code, status) and needle in error.message, error
        alone = refused(lambda r=requests[position]: client.search.Search(r, timeout=30), grpc.StatusCode[status])
        assert alone == error.message  # the message the search alone gets
    assert_serving(stack)


def test_search_batch_of_none_or_too_many_is_refused_whole(client: GatewayClient, stack: LocalStack) -> None:
    one = pb.SearchRequest(terms=[pb.QueryTerm(text="a")], top_k=1)
    refused(lambda: client.search.SearchBatch(pb.SearchBatchRequest(), timeout=30), grpc.StatusCode.INVALID_ARGUMENT, "requests must hold between 1 and 16")
    refused(lambda: client.search.SearchBatch(pb.SearchBatchRequest(requests=[one] * 17), timeout=30), grpc.StatusCode.INVALID_ARGUMENT, "got 17")
    heavy = pb.SearchRequest(terms=[pb.QueryTerm(text=f"a {n}") for n in range(5)], top_k=1)  # 16 x 5 terms: more than 4 x T2I_MAX_BATCH
    refused(lambda: client.search.SearchBatch(pb.SearchBatchRequest(requests=[heavy] * 16), timeout=30), grpc.StatusCode.RESOURCE_EXHAUSTED, "80 terms in all")
    assert_serving(stack)


def big_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def test_an_image_term_may_be_as_large_as_search_image_takes(client: GatewayClient, photos: list[Path]) -> None:
    data = big_png(1600)  # about 7.3 MiB: past SearchText's cap of about 5.6 MiB, within the 64 MiB an image search takes
    assert len(data) > 6 * 2**20
    image = client.search_image(top_k=2, image=data, filter=ONLY)
    combined = search(client, pb.QueryTerm(image=data), top_k=2)
    assert [h.id for h in combined.hits] == [h.id for h in image.hits]


BAD_TERMS: list[tuple[list[pb.QueryTerm], grpc.StatusCode, str]] = [
    ([], grpc.StatusCode.INVALID_ARGUMENT, "terms must hold between 1 and 16 terms; got 0"),
    ([pb.QueryTerm(text="a")] * 17, grpc.StatusCode.INVALID_ARGUMENT, "got 17"),
    ([pb.QueryTerm(text="a"), pb.QueryTerm(weight=2.0)], grpc.StatusCode.INVALID_ARGUMENT, "terms[1]: set one of text, image, id or vector"),
    ([pb.QueryTerm(text="a", weight=0.0)], grpc.StatusCode.INVALID_ARGUMENT, "terms[0].weight is 0.0"),
    ([pb.QueryTerm(text="a", weight=math.nan)], grpc.StatusCode.INVALID_ARGUMENT, "terms[0].weight is nan"),
    ([pb.QueryTerm(text="a"), pb.QueryTerm(text="  ")], grpc.StatusCode.INVALID_ARGUMENT, "terms[1].text: query is empty"),
    ([pb.QueryTerm(text="x" * 20_000)], grpc.StatusCode.RESOURCE_EXHAUSTED, "terms[0].text: the query is 20,000 bytes"),
    ([pb.QueryTerm(image=b"not an image")], grpc.StatusCode.INVALID_ARGUMENT, "terms[0].image"),
    ([pb.QueryTerm(image=b"")], grpc.StatusCode.INVALID_ARGUMENT, "terms[0].image: image is empty"),
    ([pb.QueryTerm(id="terms/missing")], grpc.StatusCode.NOT_FOUND, "terms[0].id: no indexed image has id"),
    (
        [pb.QueryTerm(vector=pb.Vector(values=[0.5] * 7))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "terms[0].vector: has 7 values; the collection's model makes vectors of",
    ),
    ([pb.QueryTerm(vector=pb.Vector())], grpc.StatusCode.INVALID_ARGUMENT, "terms[0].vector: values is empty"),
    ([pb.QueryTerm(text="a"), pb.QueryTerm(text="a", weight=-1.0)], grpc.StatusCode.INVALID_ARGUMENT, "cancel out"),
    ([pb.QueryTerm(image=b"x")], grpc.StatusCode.FAILED_PRECONDITION, "terms[0] is an image term"),  # with CUTOFF_CALIBRATED below
]


@pytest.mark.parametrize(("terms", "code", "needle"), BAD_TERMS, ids=[needle[:40] for _, _, needle in BAD_TERMS])
def test_bad_terms_get_a_clear_status_naming_the_term(
    client: GatewayClient, stack: LocalStack, terms: list[pb.QueryTerm], code: grpc.StatusCode, needle: str
) -> None:
    cutoff = pb.CUTOFF_CALIBRATED if code == grpc.StatusCode.FAILED_PRECONDITION else pb.CUTOFF_UNSPECIFIED
    refused(lambda: client.search.Search(pb.SearchRequest(terms=terms, top_k=3, cutoff=cutoff), timeout=30), code, needle)
    assert_serving(stack)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0.0])
def test_a_vector_of_the_right_dimension_must_be_finite_and_not_zero(client: GatewayClient, stack: LocalStack, photos: list[Path], bad: float) -> None:
    dimension = client.info().dimension
    values = [bad] * dimension if bad == 0.0 else [0.1] * (dimension - 1) + [bad]
    needle = "terms[0].vector: is all zero" if bad == 0.0 else f"terms[0].vector: values[{dimension - 1}] is {bad}"
    refused(
        lambda: client.search.Search(pb.SearchRequest(terms=[pb.QueryTerm(vector=pb.Vector(values=values))], top_k=3), timeout=30),
        grpc.StatusCode.INVALID_ARGUMENT,
        needle,
    )
    assert_serving(stack)
