"""Request checks with messages that say what was wrong and what is allowed."""

from __future__ import annotations

from collections.abc import Sequence

from core.errors import InvalidArgument, ResourceExhausted
from core.records import MAX_ID_BYTES, MAX_LABEL_BYTES, MAX_LABELS, MAX_URI_BYTES

MAX_QUERY_BYTES = 16 * 1024  # the gateway's default (T2I_MAX_TEXT_REQUEST_KB): far beyond the 77 tokens CLIP reads


def require_query(query: str, max_bytes: int = MAX_QUERY_BYTES) -> str:
    """A non-blank query of at most ``max_bytes`` (UTF-8), stripped.

    Raises:
        ResourceExhausted: the query is longer than ``max_bytes``.
        InvalidArgument: it is blank.
    """
    if len(query) * 4 > max_bytes and (size := len(query.encode())) > max_bytes:
        raise ResourceExhausted(f"the query is {size:,} bytes; queries are limited to {max_bytes:,} bytes (CLIP reads the first 77 tokens)")
    text = query.strip()
    if not text:
        raise InvalidArgument("query is empty; send a sentence such as 'red car'")
    return text


def require_top_k(top_k: int, max_top_k: int) -> int:
    """``top_k`` within ``1..max_top_k``."""
    if not 1 <= top_k <= max_top_k:
        raise InvalidArgument(f"top_k must be between 1 and {max_top_k}; got {top_k}")
    return top_k


def require_min_score(min_score: float | None) -> float | None:
    """A cosine threshold within -1..1, or None."""
    if min_score is not None and not -1.0 <= min_score <= 1.0:
        raise InvalidArgument(f"min_score must be between -1 and 1 (cosine similarity); got {min_score}")
    return min_score


def require_batch(items: Sequence[object], max_batch: int, what: str) -> None:
    """Between 1 and ``max_batch`` items."""
    if not 1 <= len(items) <= max_batch:
        raise InvalidArgument(f"{what} must hold between 1 and {max_batch} entries; got {len(items)}")


def require_id(item_id: str) -> str:
    """A non-empty id of at most ``MAX_ID_BYTES`` bytes."""
    if not item_id or not item_id.strip():
        raise InvalidArgument("id is empty")
    if len(item_id.encode()) > MAX_ID_BYTES:
        raise InvalidArgument(f"id is longer than {MAX_ID_BYTES} bytes")
    return item_id


def require_ids(ids: Sequence[str], max_batch: int) -> None:
    """Between 1 and ``max_batch`` ids, each valid."""
    require_batch(ids, max_batch, "ids")
    for item_id in ids:
        require_id(item_id)


def check_item(item_id: str, uri: str, labels: Sequence[str]) -> str | None:
    """Why an item to index is invalid, or None when it is fine."""
    try:
        require_id(item_id)
    except InvalidArgument as exc:
        return str(exc)
    if len(uri.encode()) > MAX_URI_BYTES:
        return f"uri is longer than {MAX_URI_BYTES} bytes"
    if len(labels) > MAX_LABELS:
        return f"{len(labels)} labels; at most {MAX_LABELS} are allowed"
    for label in labels:
        if not label or len(label.encode()) > MAX_LABEL_BYTES:
            return f"label {label[:40]!r} must be 1..{MAX_LABEL_BYTES} bytes"
    return None
