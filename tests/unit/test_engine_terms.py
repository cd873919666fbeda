"""Combined queries (Search) and SearchBatch in the engine, over the fake Milvus and a fake Triton that gives each text its own vector."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from core.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, T2IError
from core.filters import SearchFilter
from gateway.servicers import converted, to_batch_result
from search.cutoff import Cutoff
from search.engine import SearchResult
from search.terms import Kind, Term, TermsQuery
from tests.support.engine import Parts
from tests.support.images import png
from tests.unit.fake_triton import FakeResult
from text2image.v1 import text2image_pb2 as pb

ROWS = {"east": [1.0, 0.0], "north": [0.0, 1.0], "west": [-1.0, 0.0], "northeast": [0.6, 0.8]}  # the fake's image vector is (3, 4): northeast


class Texts:
    """A fake Triton text tower that answers each known text its own vector (the tokens of a text are its key)."""

    def __init__(self, parts: Parts, vectors: dict[str, list[float]]) -> None:
        tokenizer = parts.models.newest.tokenizer
        self.by_tokens = {self.key(tokenizer.encode([t]).input_ids[0], tokenizer.encode([t]).attention_mask[0]): np.asarray(v) for t, v in vectors.items()}
        self.batches: list[int] = []  # texts per text-tower call
        original = parts.triton.infer

        async def infer(model: str, inputs: list[Any], **kwargs: Any) -> FakeResult:
            result = await original(model, inputs, **kwargs)
            if model == "clip_text":
                shape = inputs[0].shape()
                ids = np.frombuffer(inputs[0]._get_content(), dtype=np.int64).reshape(shape)
                mask = np.frombuffer(inputs[1]._get_content(), dtype=np.int64).reshape(shape)
                self.batches.append(shape[0])
                result.array = np.stack([self.by_tokens.get(self.key(i, m), np.asarray([3.0, 4.0])) for i, m in zip(ids, mask, strict=True)]).astype(np.float32)
            return result

        parts.triton.infer = infer  # type: ignore[method-assign,assignment]

    @staticmethod
    def key(ids: np.ndarray, mask: np.ndarray) -> tuple[int, ...]:
        return tuple(int(i) for i, m in zip(ids, mask, strict=True) if m)


@pytest.fixture()
async def parts(model_repo: Path) -> AsyncIterator[Parts]:
    made = Parts(model_repo)
    made.milvus.add("c1", made.stamp.describe(), {name: {"uri": f"mem://{name}", "vector": vector} for name, vector in ROWS.items()})
    made.milvus.aliases["alias"] = "c1"
    yield made
    await made.engine.close()


@pytest.fixture()
def texts(parts: Parts) -> Texts:
    return Texts(parts, {"sun rise": [1.0, 0.0], "pole star": [0.0, 2.0], "sun set": [-1.0, 0.0]})


def ranked(result: SearchResult) -> list[tuple[str, float]]:
    return [(hit.id, round(hit.score, 4)) for hit in result.hits]


async def test_one_text_term_ranks_as_search_text(parts: Parts, texts: Texts) -> None:
    alone = await parts.engine.search(TermsQuery([Term(Kind.TEXT, "pole star")], 4), None)
    plain = await parts.engine.search_text("pole star", 4, SearchFilter(), None, None)
    assert ranked(alone) == ranked(plain) and alone.hits[0].id == "north"
    assert (alone.query_tokens, alone.truncated) == (plain.query_tokens, False) and alone.query_tokens > 2


async def test_weighted_text_terms_are_encoded_in_one_batch_and_combined_as_documented(parts: Parts, texts: Texts) -> None:
    terms = [Term(Kind.TEXT, "sun rise", 2.0), Term(Kind.TEXT, "pole star", -1.0), Term(Kind.TEXT, "sun set", 0.5), Term(Kind.TEXT, "pole star", 0.25)]
    result = await parts.engine.search(TermsQuery(terms, 4), None)
    assert texts.batches == [3]  # one call, the repeated text once
    # By hand: s = 2*(1,0) - 1*(0,1) + 0.5*(-1,0) + 0.25*(0,1) = (1.5, -0.75); q = s/||s||.
    q = np.array([1.5, -0.75]) / math.hypot(1.5, -0.75)
    expected = sorted(((name, round(float(np.dot(q, np.asarray(v) / np.linalg.norm(v))), 4)) for name, v in ROWS.items()), key=lambda p: -p[1])
    assert ranked(result) == expected


async def test_a_vector_query_needs_no_triton_and_checks_the_dimension(parts: Parts) -> None:
    result = await parts.engine.search(TermsQuery([Term(Kind.VECTOR, [0.0, -3.0])], 4), None)
    assert ranked(result)[2:] == [("northeast", -0.8), ("north", -1.0)] and parts.triton.calls == 0  # q = (0, -1)
    for values, message in (([1.0, 0.0, 0.0], r"terms\[0\]\.vector: has 3 values; the collection's model makes vectors of 2"), ([math.nan, 1.0], "finite")):
        with pytest.raises(InvalidArgument, match=message):
            await parts.engine.search(TermsQuery([Term(Kind.VECTOR, values)], 4), None)
    with pytest.raises(InvalidArgument, match=r"terms\[0\]\.vector: is all zero"):
        await parts.engine.search(TermsQuery([Term(Kind.VECTOR, [0.0, 0.0])], 4), None)
    assert parts.milvus.calls.count("search") == 1


async def test_id_terms_read_their_stored_vectors_and_exclude_ids_leaves_them_out(parts: Parts, texts: Texts) -> None:
    query = TermsQuery([Term(Kind.ID, "north"), Term(Kind.TEXT, "sun rise", 0.1)], 4)
    with_ids = await parts.engine.search(query, None)
    assert with_ids.hits[0].id == "north"
    without = await parts.engine.search(TermsQuery(query.terms, 4, exclude_ids=True), None)
    assert [h.id for h in without.hits] == [h.id for h in with_ids.hits if h.id != "north"]
    with pytest.raises(NotFound, match=r"^terms\[1\]\.id: no indexed image has id 'gone'"):
        await parts.engine.search(TermsQuery([Term(Kind.ID, "north"), Term(Kind.ID, "gone")], 4), None)


async def test_image_terms_are_decoded_and_a_bad_one_is_named(parts: Parts) -> None:
    result = await parts.engine.search(TermsQuery([Term(Kind.IMAGE, png()), Term(Kind.IMAGE, png(), 2.0)], 4), None)
    assert result.hits[0].id == "northeast" and result.hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert parts.triton.calls == 1  # both images in one vision batch
    with pytest.raises(InvalidArgument, match=r"^terms\[1\]\.image: "):
        await parts.engine.search(TermsQuery([Term(Kind.IMAGE, png()), Term(Kind.IMAGE, b"not an image")], 4), None)


async def test_terms_that_cancel_out_and_the_calibrated_cut_off(parts: Parts, texts: Texts) -> None:
    with pytest.raises(InvalidArgument, match="cancel out"):
        await parts.engine.search(TermsQuery([Term(Kind.TEXT, "sun rise"), Term(Kind.ID, "east", -1.0)], 4), None)
    calls = parts.triton.calls
    with pytest.raises(FailedPrecondition, match=r"terms\[1\] is an image term"):
        await parts.engine.search(TermsQuery([Term(Kind.TEXT, "sun rise"), Term(Kind.IMAGE, png())], 4, cutoff=Cutoff.CALIBRATED), None)
    with pytest.raises(FailedPrecondition, match="no calibrated threshold"):  # all text: on to the model, which has none
        await parts.engine.search(TermsQuery([Term(Kind.TEXT, "sun rise")], 4, cutoff=Cutoff.CALIBRATED), None)
    assert parts.triton.calls == calls  # refused before any encoding


async def test_a_page_token_walks_on_past_top_k(parts: Parts, texts: Texts) -> None:
    query = TermsQuery([Term(Kind.TEXT, "sun rise")], 2)
    first = await parts.engine.search(query, None)
    second = await parts.engine.search(TermsQuery(query.terms, 2, page_token=first.next_page_token), None)
    assert first.next_page_token and [h.id for h in first.hits + second.hits] == ["east", "northeast", "north", "west"]
    with pytest.raises(InvalidArgument, match="another request"):
        await parts.engine.search(TermsQuery([Term(Kind.TEXT, "sun set")], 2, page_token=first.next_page_token), None)


async def test_search_batch_answers_in_order_with_errors_of_their_own_and_one_text_batch(parts: Parts, texts: Texts) -> None:
    queries: list[TermsQuery | T2IError] = [
        TermsQuery([Term(Kind.TEXT, "sun rise")], 1),
        TermsQuery([Term(Kind.TEXT, "sun set"), Term(Kind.VECTOR, [1.0])], 1),  # wrong dimension
        InvalidArgument("cutoff: unknown value 9"),  # did not convert
        TermsQuery([Term(Kind.TEXT, "pole star"), Term(Kind.TEXT, "sun set", 0.001)], 1),
    ]
    outcomes = await parts.engine.search_batch(queries, None)
    assert isinstance(outcomes[0], SearchResult) and outcomes[0].hits[0].id == "east"
    assert isinstance(outcomes[1], InvalidArgument) and str(outcomes[1]).startswith("terms[1].vector: has 1 values")
    assert isinstance(outcomes[2], InvalidArgument) and str(outcomes[2]) == "cutoff: unknown value 9"
    assert isinstance(outcomes[3], SearchResult) and outcomes[3].hits[0].id == "north"
    assert texts.batches == [3]  # every text of every search in one call, before the searches
    for size in (0, 5):  # max_batch is 4
        with pytest.raises(InvalidArgument, match=rf"requests must hold between 1 and 4 entries; got {size}"):
            await parts.engine.search_batch([TermsQuery([Term(Kind.TEXT, "x")], 1)] * size, None)
    many = TermsQuery([Term(Kind.TEXT, f"x{n}") for n in range(5)], 1)
    with pytest.raises(ResourceExhausted, match=r"requests: 20 terms in all; a SearchBatch takes at most 16 \(4 per search"):
        await parts.engine.search_batch([many] * 4, None)  # 4 searches of 5 terms: more than 4 x max_batch
    assert len(await parts.engine.search_batch([many, many, many], None)) == 3  # 15 terms pass


def test_batch_results_carry_the_status_the_search_alone_would_have_got() -> None:
    error = to_batch_result(NotFound("terms[0].id: no indexed image has id 'x'"))
    assert (error.error.code, error.error.status, error.error.message) == (5, "NOT_FOUND", "terms[0].id: no indexed image has id 'x'")
    crash = to_batch_result(RuntimeError("a bug"))
    assert (crash.error.code, crash.error.status) == (grpc.StatusCode.INTERNAL.value[0], "INTERNAL")
    assert crash.error.message.startswith("internal error (incident ") and "a bug" not in crash.error.message
    bad = converted(pb.SearchRequest(terms=[pb.QueryTerm(text="x")], top_k=1, cutoff=9))  # type: ignore[arg-type]
    assert isinstance(bad, InvalidArgument) and "cutoff: unknown value 9" in str(bad)
    good = converted(pb.SearchRequest(terms=[pb.QueryTerm(vector=pb.Vector(values=[1.0, 2.0]), weight=-2.0), pb.QueryTerm()], top_k=3, exclude_ids=True))
    assert isinstance(good, TermsQuery) and good.exclude_ids and good.top_k == 3
    assert [(t.kind, t.value, t.weight) for t in good.terms] == [(Kind.VECTOR, (1.0, 2.0), -2.0), (None, "", None)]
