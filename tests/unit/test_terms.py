"""Combined queries without servers: the maths of ``search.terms.combine`` against a hand computation, and every refusal."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from core.filters import SearchFilter, build_expression
from search.cutoff import Cutoff
from search.terms import MAX_TERMS, Kind, Term, check_dimensions, check_terms, combine, excluding, require_calibratable, token_report
from tests.unit.fake_milvus import parse_expression


def test_combine_is_the_normalized_weighted_sum_of_normalized_embeddings() -> None:
    # By hand: e1 = (3, 4)/5 = (0.6, 0.8), e2 = (1, 0); s = 2*e1 - 1*e2 = (0.2, 1.6); ||s|| = sqrt(0.04 + 2.56) = sqrt(2.6).
    q = combine([np.array([3.0, 4.0]), np.array([1.0, 0.0])], [2.0, -1.0])
    expected = np.array([0.2, 1.6]) / math.sqrt(2.6)
    np.testing.assert_allclose(q, expected, rtol=1e-6)
    assert q.dtype == np.float32 and float(np.linalg.norm(q)) == pytest.approx(1.0, abs=1e-6)


def test_one_term_of_weight_one_is_its_own_normalized_vector() -> None:
    np.testing.assert_allclose(combine([np.array([0.0, 2.0, 0.0])], [1.0]), [0.0, 1.0, 0.0])
    np.testing.assert_allclose(combine([np.array([0.0, 2.0, 0.0])], [5.0]), [0.0, 1.0, 0.0])  # the weight of a lone term does not matter


def test_a_negative_term_lowers_the_images_like_it() -> None:
    red, blue = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    images = {"red": np.array([1.0, 0.0, 0.0]), "red+blue": np.array([0.7, 0.7, 0.0]) / math.hypot(0.7, 0.7)}
    alone = {k: float(np.dot(combine([red], [1.0]), v)) for k, v in images.items()}
    minus = {k: float(np.dot(combine([red, blue], [1.0, -0.5]), v)) for k, v in images.items()}
    assert minus["red+blue"] < alone["red+blue"] and minus["red+blue"] < minus["red"]


def test_terms_that_cancel_out_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="cancel out"):
        combine([np.array([3.0, 4.0]), np.array([6.0, 8.0])], [1.0, -1.0])  # the same direction, one minus the other
    with pytest.raises(InvalidArgument, match="cancel out"):
        combine([np.array([1.0, 0.0]), np.array([1.0, 1e-5])], [1.0, -1.0])  # nearly: length 1e-5 < 1e-3 * 2
    combine([np.array([1.0, 0.0]), np.array([1.0, 0.1])], [1.0, -1.0])  # far enough apart: a direction


def test_check_terms_resolves_weights_and_strips_texts() -> None:
    checked = check_terms([Term(Kind.TEXT, "  a dog "), Term(Kind.ID, "x", -0.5), Term(Kind.VECTOR, [1.0, 2.0], 2.0), Term(Kind.IMAGE, b"\x89PNG")])
    assert [(t.kind, t.value, t.weight) for t in checked] == [
        (Kind.TEXT, "a dog", 1.0),
        (Kind.ID, "x", -0.5),
        (Kind.VECTOR, (1.0, 2.0), 2.0),
        (Kind.IMAGE, b"\x89PNG", 1.0),
    ]


@pytest.mark.parametrize(
    ("terms", "error", "message"),
    [
        ([], InvalidArgument, r"terms must hold between 1 and 16 terms; got 0"),
        ([Term(Kind.TEXT, "a")] * (MAX_TERMS + 1), InvalidArgument, r"between 1 and 16 terms; got 17"),
        ([Term(Kind.TEXT, "a"), Term(None)], InvalidArgument, r"^terms\[1\]: set one of text, image, id or vector"),
        ([Term(Kind.TEXT, "a", 0.0)], InvalidArgument, r"^terms\[0\]\.weight is 0.0; a weight must be finite and not 0"),
        ([Term(Kind.TEXT, "a", math.nan)], InvalidArgument, r"^terms\[0\]\.weight is nan"),
        ([Term(Kind.TEXT, "a"), Term(Kind.TEXT, "b", -math.inf)], InvalidArgument, r"^terms\[1\]\.weight is -inf"),
        ([Term(Kind.TEXT, "a"), Term(Kind.TEXT, "   ")], InvalidArgument, r"^terms\[1\]\.text: query is empty"),
        ([Term(Kind.TEXT, "x" * 20_000)], ResourceExhausted, r"^terms\[0\]\.text: the query is 20,000 bytes"),
        ([Term(Kind.ID, "")], InvalidArgument, r"^terms\[0\]\.id: id is empty"),
        ([Term(Kind.ID, "x" * 513)], InvalidArgument, r"^terms\[0\]\.id: id is longer than 512 bytes"),
        ([Term(Kind.IMAGE, b"")], InvalidArgument, r"^terms\[0\]\.image: image is empty"),
        ([Term(Kind.VECTOR, [])], InvalidArgument, r"^terms\[0\]\.vector: values is empty"),
        ([Term(Kind.VECTOR, [1.0, math.nan])], InvalidArgument, r"^terms\[0\]\.vector: values\[1\] is nan; every value must be finite"),
        ([Term(Kind.VECTOR, [math.inf, 1.0])], InvalidArgument, r"^terms\[0\]\.vector: values\[0\] is inf"),
        ([Term(Kind.VECTOR, [0.0, 0.0])], InvalidArgument, r"^terms\[0\]\.vector: is all zero"),
    ],
)
def test_every_bad_term_is_refused_naming_it(terms: list[Term], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        check_terms(terms)


def test_a_vector_of_another_dimension_is_refused_naming_it() -> None:
    terms = check_terms([Term(Kind.TEXT, "a"), Term(Kind.VECTOR, [1.0, 0.0, 0.0])])
    check_dimensions(terms, 3)
    with pytest.raises(InvalidArgument, match=r"^terms\[1\]\.vector: has 3 values; the collection's model makes vectors of 2"):
        check_dimensions(terms, 2)


def test_the_calibrated_cut_off_needs_every_term_text_with_a_positive_weight() -> None:
    require_calibratable(check_terms([Term(Kind.TEXT, "a"), Term(Kind.TEXT, "b", 0.5)]), Cutoff.CALIBRATED)
    require_calibratable(check_terms([Term(Kind.IMAGE, b"x")]), Cutoff.AUTOCUT)  # other cut-offs take any term
    with pytest.raises(FailedPrecondition, match=r"terms\[1\] is a text term of negative weight"):
        require_calibratable(check_terms([Term(Kind.TEXT, "a"), Term(Kind.TEXT, "b", -0.5)]), Cutoff.CALIBRATED)
    for kind, value in ((Kind.IMAGE, b"x"), (Kind.ID, "x"), (Kind.VECTOR, [1.0])):
        with pytest.raises(FailedPrecondition, match=rf"terms\[0\] is an? {kind.value} term"):
            require_calibratable(check_terms([Term(kind, value)]), Cutoff.CALIBRATED)


def test_excluding_leaves_out_the_ids_and_keeps_the_filter() -> None:
    base = build_expression(SearchFilter(all_of=("kept",)))
    expression = excluding(base, ["a", 'b"quoted', "a"])
    keep = parse_expression(expression)
    assert expression.count("id !=") == 2  # each id once
    assert keep({"id": "c", "labels": ["kept"]})
    assert not keep({"id": "a", "labels": ["kept"]}) and not keep({"id": 'b"quoted', "labels": ["kept"]})
    assert not keep({"id": "c", "labels": []})
    assert excluding("", []) == "" and excluding(base, []) == base


def test_token_report_sums_the_text_terms() -> None:
    assert token_report([5, 7], [False, True]) == (12, True)
    assert token_report([], []) == (0, False)
