"""Structured filters to Milvus boolean expressions, with every value quoted as a literal.

Clients never send expression text. Strings are emitted as JSON string literals, which Milvus
parses with the same escapes, so quotes, backslashes and expression syntax inside a value stay
part of the value.

A filter's size is bounded field by field (the README's bad-input table and the proto's comments
state the same limits): at most ``MAX_FILTER_IDS`` ids of at most ``MAX_ID_BYTES`` each, at most
``MAX_FILTER_LABELS`` labels (all lists together) of at most ``MAX_LABEL_BYTES`` each (no stored id
or label is longer), and a ``uri_prefix`` of at most ``MAX_VALUE_BYTES``. Too many entries is
``ResourceExhausted``; a value that is too long or malformed is ``InvalidArgument``. At the limits,
Milvus 2.3 took about 0.6 s for a search here (10,000 ids of 512 bytes: a 5 MB expression), 0.1 s
with 10,000 short ids.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.errors import InvalidArgument, ResourceExhausted
from core.records import MAX_ID_BYTES, MAX_LABEL_BYTES, METADATA_SCHEMA, UNKNOWN_TIME

MAX_FILTER_IDS = 10_000  # Filter.ids: a caller restricting a search to its own images
MAX_FILTER_LABELS = 5_000  # LabelFilter's all_of, any_of and none_of together
MAX_VALUE_BYTES = 2048  # uri_prefix, and any literal (an excluded id)


# Typed metadata (core.records.ImageMetadata): the formats a filter may name, and the instants a time may be.
KNOWN_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")
MAX_FILTER_FORMATS = 16
MIN_TIME_US = -62_135_596_800 * 10**6  # 0001-01-01T00:00:00Z, the earliest protobuf Timestamp
MAX_TIME_US = 253_402_300_799 * 10**6 + 999_999  # 9999-12-31T23:59:59.999999Z, the latest
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Range:
    """An inclusive range of integers (or of microseconds since the epoch); None is an open bound."""

    min: int | None = None
    max: int | None = None

    def __bool__(self) -> bool:
        return self.min is not None or self.max is not None


@dataclass(frozen=True)
class MetadataConditions:
    """Conditions on the typed metadata; empty fields impose nothing. Times in microseconds since the epoch (UTC)."""

    width: Range = Range()
    height: Range = Range()
    bytes: Range = Range()
    formats: Sequence[str] = field(default_factory=tuple)
    modified_time: Range = Range()
    capture_time: Range = Range()

    def __bool__(self) -> bool:
        return any((self.width, self.height, self.bytes, self.formats, self.modified_time, self.capture_time))


class Expression(str):
    """A Milvus expression built here, and the first row schema (``core.records.SCHEMA_FIELDS``) whose fields it names.

    ``ImageIndex.search`` and ``count`` refuse it on an older collection (``FailedPrecondition``),
    instead of Milvus's "field not exist".
    """

    schema: int

    def __new__(cls, text: str, schema: int = 1) -> Expression:
        made = super().__new__(cls, text)
        made.schema = schema
        return made


def schema_needed(expression: str) -> int:
    """The row schema ``expression`` needs (1 for plain text, which names only the first schema's fields)."""
    return getattr(expression, "schema", 1)


@dataclass(frozen=True)
class SearchFilter:
    """Conditions on indexed images; empty fields impose nothing."""

    all_of: Sequence[str] = field(default_factory=tuple)
    any_of: Sequence[str] = field(default_factory=tuple)
    none_of: Sequence[str] = field(default_factory=tuple)
    ids: Sequence[str] = field(default_factory=tuple)
    uri_prefix: str = ""
    metadata: MetadataConditions = MetadataConditions()

    def matches_labels(self, labels: set[str]) -> bool:
        """Whether an image with ``labels`` passes the label conditions (as ``build_expression`` asks Milvus)."""
        return set(self.all_of) <= labels and (not self.any_of or bool(labels & set(self.any_of))) and not labels & set(self.none_of)


def literal(value: str, max_bytes: int = MAX_VALUE_BYTES, what: str = "filter value") -> str:
    """A Milvus string literal for ``value``.

    Raises:
        InvalidArgument: the value is longer than ``max_bytes`` or holds a NUL character.
    """
    if len(value.encode()) > max_bytes:
        raise InvalidArgument(f"{what} {value[:40]!r}... is longer than {max_bytes} bytes")
    if "\x00" in value:
        raise InvalidArgument(f"{what} contains a NUL character")
    return json.dumps(value, ensure_ascii=True)


def _list(values: Sequence[str], max_bytes: int, what: str) -> str:
    return "[" + ", ".join(literal(v, max_bytes, what) for v in values) + "]"


def check_size(search_filter: SearchFilter) -> None:
    """Refuse a filter with more ids or labels than allowed (before any value is looked at).

    Raises:
        ResourceExhausted: more than ``MAX_FILTER_IDS`` ids or ``MAX_FILTER_LABELS`` labels.
    """
    if len(search_filter.ids) > MAX_FILTER_IDS:
        raise ResourceExhausted(f"filter.ids holds {len(search_filter.ids):,} ids; at most {MAX_FILTER_IDS:,} are allowed")
    labels = len(search_filter.all_of) + len(search_filter.any_of) + len(search_filter.none_of)
    if labels > MAX_FILTER_LABELS:
        raise ResourceExhausted(f"filter.labels holds {labels:,} labels (all_of, any_of and none_of together); at most {MAX_FILTER_LABELS:,} are allowed")


def _time(us: int) -> str:
    seconds, micros = divmod(us, 10**6)
    days, rest = divmod(seconds, 86_400)
    try:
        return (datetime.datetime(1970, 1, 1) + datetime.timedelta(days=days, seconds=rest, microseconds=micros)).isoformat() + "Z"
    except OverflowError:
        return f"{us} us since the epoch"


def metadata_conditions(conditions: MetadataConditions) -> list[str]:
    """The Milvus conditions for typed metadata, every value formatted here from an int or a known format name.

    Ranges are inclusive. A row whose value is unknown (0, "" or ``UNKNOWN_TIME``: rows carried over
    from an older collection, images without EXIF, uploads without a time) never matches a set range:
    every range gets a lower bound above the unknown value.

    Raises:
        InvalidArgument: min > max (since > until), a bound out of range, an unknown format, or more
            than ``MAX_FILTER_FORMATS`` formats; the message names the field.
    """
    parts: list[str] = []
    for name, lowest, bounds in (
        ("width", 1, conditions.width),
        ("height", 1, conditions.height),
        ("bytes", 1, conditions.bytes),
        ("modified_time", UNKNOWN_TIME + 1, conditions.modified_time),
        ("capture_time", UNKNOWN_TIME + 1, conditions.capture_time),
    ):
        if not bounds:
            continue
        timed = name.endswith("_time")
        low, high = ("since", "until") if timed else ("min", "max")
        shown = _time if timed else str
        for which, value in ((low, bounds.min), (high, bounds.max)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not _INT64[0] <= value <= _INT64[1]):
                raise InvalidArgument(f"filter.metadata.{name}.{which}: {value!r} is not a 64-bit integer")
        if bounds.min is not None and bounds.max is not None and bounds.min > bounds.max:
            raise InvalidArgument(
                f"filter.metadata.{name}: {low} {shown(bounds.min)} is {'later' if timed else 'greater'} than {high} {shown(bounds.max)}; "
                f"the range is inclusive, so {low} <= {high}"
            )
        parts.append(f"{name} >= {max(lowest, bounds.min if bounds.min is not None else lowest)}")
        if bounds.max is not None:
            parts.append(f"{name} <= {int(bounds.max)}")
    if conditions.formats:
        if len(conditions.formats) > MAX_FILTER_FORMATS:
            raise InvalidArgument(f"filter.metadata.formats holds {len(conditions.formats)} entries; at most {MAX_FILTER_FORMATS} are allowed")
        names = []
        for position, given in enumerate(conditions.formats):
            upper = given.upper() if isinstance(given, str) else ""
            if upper not in KNOWN_FORMATS:
                raise InvalidArgument(f"filter.metadata.formats[{position}]: unknown format {str(given)[:40]!r}; use {', '.join(KNOWN_FORMATS)}")
            names.append(upper)
        parts.append(f"format in {_list(sorted(set(names)), 16, 'format')}")
    return parts


def build_expression(search_filter: SearchFilter, exclude_id: str | None = None) -> Expression:
    """The Milvus expression for ``search_filter`` (``""`` when it imposes nothing).

    Raises:
        ResourceExhausted: too many ids or labels (``check_size``).
        InvalidArgument: an id, label or prefix that is too long, holds a NUL, or a ``%`` in the prefix (or a
            backslash at its end); bad metadata conditions (``metadata_conditions``).
    """
    check_size(search_filter)
    parts: list[str] = []
    if search_filter.all_of:
        parts.append(f"array_contains_all(labels, {_list(search_filter.all_of, MAX_LABEL_BYTES, 'filter label')})")
    if search_filter.any_of:
        parts.append(f"array_contains_any(labels, {_list(search_filter.any_of, MAX_LABEL_BYTES, 'filter label')})")
    if search_filter.none_of:
        parts.append(f"not array_contains_any(labels, {_list(search_filter.none_of, MAX_LABEL_BYTES, 'filter label')})")
    if search_filter.ids:
        parts.append(f"id in {_list(search_filter.ids, MAX_ID_BYTES, 'filter id')}")
    if search_filter.uri_prefix:
        if "%" in search_filter.uri_prefix:
            raise InvalidArgument("uri_prefix may not contain '%'")
        if search_filter.uri_prefix.endswith("\\"):
            # Milvus reads a backslash before the '%' appended below as its escape: the prefix would match nothing.
            raise InvalidArgument("uri_prefix may not end with a backslash")
        parts.append(f"uri like {literal(search_filter.uri_prefix + '%', MAX_VALUE_BYTES + 1, 'uri_prefix')}")
    if exclude_id is not None:
        parts.append(f"id != {literal(exclude_id, MAX_ID_BYTES, 'id')}")
    typed = metadata_conditions(search_filter.metadata)
    return Expression(" and ".join(f"({part})" for part in parts + typed), METADATA_SCHEMA if typed else 1)
