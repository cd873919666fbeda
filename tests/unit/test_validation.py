"""Request checks and their messages."""

from __future__ import annotations

import pytest

from core.errors import InvalidArgument, ResourceExhausted
from search.validation import MAX_QUERY_BYTES, check_item, require_batch, require_min_score, require_query, require_top_k


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_blank_query_is_rejected(query: str) -> None:
    with pytest.raises(InvalidArgument, match="query is empty"):
        require_query(query)


def test_query_is_stripped() -> None:
    assert require_query("  red car ") == "red car"


def test_a_query_has_its_own_size_limit_in_bytes() -> None:
    assert require_query("a" * MAX_QUERY_BYTES) == "a" * MAX_QUERY_BYTES
    assert len(require_query("é" * (MAX_QUERY_BYTES // 2))) == MAX_QUERY_BYTES // 2
    with pytest.raises(ResourceExhausted, match=r"^the query is 16,385 bytes; queries are limited to 16,384 bytes \(CLIP reads the first 77 tokens\)$"):
        require_query("é" * (MAX_QUERY_BYTES // 2) + "a")  # 16,385 bytes
    with pytest.raises(ResourceExhausted, match=r"the query is 1,048,576 bytes; queries are limited to 1,000 bytes"):
        require_query("x" * 1024 * 1024, max_bytes=1000)


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
