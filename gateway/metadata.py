"""Typed metadata between protobuf and the engine: ``MetadataFilter`` to conditions, ``ImageMetadata`` to messages, Timestamps to microseconds.

Times travel as ``google.protobuf.Timestamp`` and are stored as microseconds since the epoch
(``core.records.ImageMetadata``). A range's ``since`` rounds up to the next microsecond and its
``until`` down, so an inclusive range of Timestamps selects exactly the stored instants inside it.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from core.errors import InvalidArgument
from core.filters import MAX_TIME_US, MIN_TIME_US, MetadataConditions, Range
from core.records import ImageMetadata
from text2image.v1 import text2image_pb2 as pb


def micros(timestamp: Timestamp, what: str, round_up: bool = False) -> int:
    """``timestamp`` in microseconds since the epoch (rounded down, or up with ``round_up``).

    Raises:
        InvalidArgument: not a valid Timestamp (nanos outside 0..999,999,999, or outside the years 1 to 9999), naming ``what``.
    """
    if not 0 <= timestamp.nanos <= 999_999_999:
        raise InvalidArgument(f"{what}: nanos must be in 0..999999999 (got {timestamp.nanos})")
    whole, rest = divmod(timestamp.nanos, 1000)
    value = timestamp.seconds * 10**6 + whole + (1 if round_up and rest else 0)
    if not MIN_TIME_US <= value <= MAX_TIME_US:
        raise InvalidArgument(f"{what}: {timestamp.seconds} seconds is not a valid timestamp (years 1 to 9999)")
    return value


def timestamp(us: int | None) -> Timestamp | None:
    """A Timestamp for microseconds since the epoch (None stays None: unknown)."""
    if us is None:
        return None
    seconds, rest = divmod(us, 10**6)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


def _int_range(message: pb.Int64Range) -> Range:
    return Range(message.min if message.HasField("min") else None, message.max if message.HasField("max") else None)


def _time_range(message: pb.TimeRange, what: str) -> Range:
    since = micros(message.since, f"{what}.since", round_up=True) if message.HasField("since") else None
    until = micros(message.until, f"{what}.until") if message.HasField("until") else None
    return Range(since, until)


def to_conditions(message: pb.MetadataFilter) -> MetadataConditions:
    """The engine's metadata conditions for a ``MetadataFilter`` (validated further by ``core.filters.metadata_conditions``)."""
    return MetadataConditions(
        width=_int_range(message.width),
        height=_int_range(message.height),
        bytes=_int_range(message.bytes),
        formats=tuple(message.formats),
        modified_time=_time_range(message.modified_time, "filter.metadata.modified_time"),
        capture_time=_time_range(message.capture_time, "filter.metadata.capture_time"),
    )


def to_message(metadata: ImageMetadata | None) -> pb.ImageMetadata | None:
    """The ``ImageMetadata`` message of a hit or record (None, left unset, when the row has none)."""
    if metadata is None:
        return None
    return pb.ImageMetadata(
        width=metadata.width,
        height=metadata.height,
        bytes=metadata.bytes,
        format=metadata.format,
        modified_time=timestamp(metadata.modified_time),
        capture_time=timestamp(metadata.capture_time),
    )


def write_metadata(message: pb.ImageMetadata, metadata: ImageMetadata) -> None:
    """Fill ``message`` (a hit's, in place) as ``to_message(metadata)`` would be; it is set even when every value is the default."""
    message.SetInParent()
    message.width, message.height, message.bytes, message.format = metadata.width, metadata.height, metadata.bytes, metadata.format
    if metadata.modified_time is not None:
        message.modified_time.FromMicroseconds(metadata.modified_time)
    if metadata.capture_time is not None:
        message.capture_time.FromMicroseconds(metadata.capture_time)


def modified_time_of(item: pb.ImageItem) -> int | None:
    """An ``ImageItem``'s modification time in microseconds (None when unset; out of range: the engine fails the item alone)."""
    if not item.HasField("modified_time"):
        return None
    seconds, nanos = item.modified_time.seconds, item.modified_time.nanos
    return seconds * 10**6 + nanos // 1000 if 0 <= nanos <= 999_999_999 else MAX_TIME_US + 1
