"""Structured filters become Milvus expressions with every value a quoted literal."""

from __future__ import annotations

import json

import pytest

from core.errors import InvalidArgument, ResourceExhausted
from core.filters import MAX_FILTER_IDS, MAX_FILTER_LABELS, MAX_VALUE_BYTES, SearchFilter, build_expression, literal
from core.records import MAX_ID_BYTES, MAX_LABEL_BYTES


def test_empty_filter_is_empty_expression() -> None:
    assert build_expression(SearchFilter()) == ""


def test_all_conditions_are_joined_with_and() -> None:
    expression = build_expression(SearchFilter(all_of=["a"], any_of=["b", "c"], none_of=["d"], ids=["x"], uri_prefix="/data/"), exclude_id="self")
    assert expression == (
        '(array_contains_all(labels, ["a"])) and (array_contains_any(labels, ["b", "c"])) and '
        '(not array_contains_any(labels, ["d"])) and (id in ["x"]) and (uri like "/data/%") and (id != "self")'
    )


@pytest.mark.parametrize("value", ['a" or id != "', "x\\", '"]) or (1 == 1', "tab\tnew\nline", "ünï 🚗", "' or ''='"])
def test_values_are_literals(value: str) -> None:
    quoted = literal(value)
    assert quoted.startswith('"') and quoted.endswith('"')
    assert json.loads(quoted) == value  # the exact value comes back: nothing escapes the literal
    inner = quoted[1:-1]
    assert '"' not in inner.replace('\\"', "")  # every quote inside is escaped


def test_limits_are_enforced() -> None:
    with pytest.raises(InvalidArgument, match="longer than"):
        literal("x" * 5000)
    with pytest.raises(InvalidArgument, match="NUL"):
        literal("a\x00b")
    with pytest.raises(InvalidArgument, match="%"):
        build_expression(SearchFilter(uri_prefix="50%"))
    with pytest.raises(InvalidArgument, match="backslash"):  # Milvus would read it as an escape of the appended %
        build_expression(SearchFilter(uri_prefix="C:\\photos\\"))
    assert "photos\\\\x" in build_expression(SearchFilter(uri_prefix="C:\\photos\\x"))  # inside, a plain character


def test_label_conditions_in_python_match_the_milvus_expression_rules() -> None:
    rule = SearchFilter(all_of=("a",), any_of=("b", "c"), none_of=("x",))
    assert rule.matches_labels({"a", "b"}) and rule.matches_labels({"a", "c", "d"})
    assert not rule.matches_labels({"b", "c"})  # all_of missing
    assert not rule.matches_labels({"a"})  # none of any_of
    assert not rule.matches_labels({"a", "b", "x"})  # a none_of label
    assert SearchFilter().matches_labels(set())


def test_a_large_filter_within_its_limits_is_one_expression() -> None:
    # Before: at most 256 values a list, so a caller could not restrict a search to 10,000 of its images.
    ids = [f"{n:04d}/" + "i" * (MAX_ID_BYTES - 5) for n in range(MAX_FILTER_IDS)]
    labels = [f"{n:04d}" + "l" * (MAX_LABEL_BYTES - 4) for n in range(MAX_FILTER_LABELS)]
    expression = build_expression(SearchFilter(any_of=labels[:4000], none_of=labels[4000:], ids=ids, uri_prefix="u" * MAX_VALUE_BYTES))
    assert expression.count("/i") == MAX_FILTER_IDS and expression.count('l"') == MAX_FILTER_LABELS
    assert f'uri like "{"u" * MAX_VALUE_BYTES}%"' in expression


def test_each_part_of_a_filter_has_its_own_limit() -> None:
    with pytest.raises(ResourceExhausted, match=r"^filter.ids holds 10,001 ids; at most 10,000 are allowed$"):
        build_expression(SearchFilter(ids=["a"] * (MAX_FILTER_IDS + 1)))
    with pytest.raises(ResourceExhausted, match=r"^filter.labels holds 5,001 labels \(all_of, any_of and none_of together\); at most 5,000"):
        build_expression(SearchFilter(all_of=["a"] * 2000, any_of=["b"] * 2000, none_of=["c"] * 1001))
    with pytest.raises(InvalidArgument, match=rf"filter id 'iii.*longer than {MAX_ID_BYTES} bytes"):
        build_expression(SearchFilter(ids=["i" * (MAX_ID_BYTES + 1)]))
    with pytest.raises(InvalidArgument, match=rf"filter label 'ééé.*longer than {MAX_LABEL_BYTES} bytes"):  # no stored label is longer
        build_expression(SearchFilter(any_of=["é" * (MAX_LABEL_BYTES // 2 + 1)]))  # bytes, not characters
    with pytest.raises(InvalidArgument, match=rf"uri_prefix .*longer than {MAX_VALUE_BYTES + 1} bytes"):
        build_expression(SearchFilter(uri_prefix="u" * (MAX_VALUE_BYTES + 1)))
