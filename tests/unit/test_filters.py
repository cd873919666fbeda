"""Structured filters become Milvus expressions with every value a quoted literal."""

from __future__ import annotations

import json

import pytest

from core.errors import InvalidArgument
from core.filters import MAX_VALUES, SearchFilter, build_expression, literal


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
    with pytest.raises(InvalidArgument, match="at most"):
        build_expression(SearchFilter(any_of=["x"] * (MAX_VALUES + 1)))
    with pytest.raises(InvalidArgument, match="longer than"):
        literal("x" * 5000)
    with pytest.raises(InvalidArgument, match="NUL"):
        literal("a\x00b")
    with pytest.raises(InvalidArgument, match="%"):
        build_expression(SearchFilter(uri_prefix="50%"))


def test_label_conditions_in_python_match_the_milvus_expression_rules() -> None:
    rule = SearchFilter(all_of=("a",), any_of=("b", "c"), none_of=("x",))
    assert rule.matches_labels({"a", "b"}) and rule.matches_labels({"a", "c", "d"})
    assert not rule.matches_labels({"b", "c"})  # all_of missing
    assert not rule.matches_labels({"a"})  # none of any_of
    assert not rule.matches_labels({"a", "b", "x"})  # a none_of label
    assert SearchFilter().matches_labels(set())
