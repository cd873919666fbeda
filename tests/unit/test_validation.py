"""Request checks and their messages."""

from __future__ import annotations

import pytest

from core.errors import InvalidArgument
from search.validation import check_item, require_batch, require_min_score, require_query, require_top_k


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_blank_query_is_rejected(query: str) -> None:
    with pytest.raises(InvalidArgument, match="query is empty"):
        require_query(query)


def test_query_is_stripped() -> None:
    assert require_query("  red car ") == "red car"


@pytest.mark.parametrize("top_k", [0, -1, 1001, 2**31 - 1])
def test_top_k_out_of_range_names_the_range(top_k: int) -> None:
    with pytest.raises(InvalidArgument, match="between 1 and 1000"):
        require_top_k(top_k, 1000)


def test_top_k_in_range() -> None:
    assert require_top_k(1, 1000) == 1 and require_top_k(1000, 1000) == 1000


def test_min_score_range() -> None:
    assert require_min_score(None) is None and require_min_score(0.5) == 0.5
    with pytest.raises(InvalidArgument, match="between -1 and 1"):
        require_min_score(1.5)


def test_batch_bounds() -> None:
    with pytest.raises(InvalidArgument, match="between 1 and 2"):
        require_batch([], 2, "texts")
    with pytest.raises(InvalidArgument, match="between 1 and 2"):
        require_batch([1, 2, 3], 2, "texts")


def test_item_checks() -> None:
    assert check_item("a", "/x.jpg", ["cat"]) is None
    assert "id is empty" in (check_item("", "", []) or "")
    assert "labels" in (check_item("a", "", ["l"] * 33) or "")
    assert "label" in (check_item("a", "", [""]) or "")
    assert "uri" in (check_item("a", "u" * 3000, []) or "")
