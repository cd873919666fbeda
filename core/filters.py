"""Structured filters to Milvus boolean expressions, with every value quoted as a literal.

Clients never send expression text. Strings are emitted as JSON string literals, which Milvus
parses with the same escapes, so quotes, backslashes and expression syntax inside a value stay
part of the value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.errors import InvalidArgument

MAX_VALUES = 256
MAX_VALUE_BYTES = 2048


@dataclass(frozen=True)
class SearchFilter:
    """Conditions on indexed images; empty fields impose nothing."""

    all_of: Sequence[str] = field(default_factory=tuple)
    any_of: Sequence[str] = field(default_factory=tuple)
    none_of: Sequence[str] = field(default_factory=tuple)
    ids: Sequence[str] = field(default_factory=tuple)
    uri_prefix: str = ""

    def matches_labels(self, labels: set[str]) -> bool:
        """Whether an image with ``labels`` passes the label conditions (as ``build_expression`` asks Milvus)."""
        return set(self.all_of) <= labels and (not self.any_of or bool(labels & set(self.any_of))) and not labels & set(self.none_of)


def literal(value: str) -> str:
    """A Milvus string literal for ``value``.

    Raises:
        InvalidArgument: the value is too long or holds a NUL character.
    """
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise InvalidArgument(f"filter value is longer than {MAX_VALUE_BYTES} bytes")
    if "\x00" in value:
        raise InvalidArgument("filter value contains a NUL character")
    return json.dumps(value, ensure_ascii=True)


def _list(name: str, values: Sequence[str]) -> str:
    if len(values) > MAX_VALUES:
        raise InvalidArgument(f"filter {name} has {len(values)} values; at most {MAX_VALUES} are allowed")
    return "[" + ", ".join(literal(v) for v in values) + "]"


def build_expression(search_filter: SearchFilter, exclude_id: str | None = None) -> str:
    """The Milvus expression for ``search_filter`` (``""`` when it imposes nothing)."""
    parts: list[str] = []
    if search_filter.all_of:
        parts.append(f"array_contains_all(labels, {_list('labels.all_of', search_filter.all_of)})")
    if search_filter.any_of:
        parts.append(f"array_contains_any(labels, {_list('labels.any_of', search_filter.any_of)})")
    if search_filter.none_of:
        parts.append(f"not array_contains_any(labels, {_list('labels.none_of', search_filter.none_of)})")
    if search_filter.ids:
        parts.append(f"id in {_list('ids', search_filter.ids)}")
    if search_filter.uri_prefix:
        if "%" in search_filter.uri_prefix:
            raise InvalidArgument("uri_prefix may not contain '%'")
        parts.append(f"uri like {literal(search_filter.uri_prefix + '%')}")
    if exclude_id is not None:
        parts.append(f"id != {literal(exclude_id)}")
    return " and ".join(f"({part})" for part in parts)
