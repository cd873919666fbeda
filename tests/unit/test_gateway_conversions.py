"""The SearchText conversions written for speed give what the plain ones give: ``to_response`` with hits written in place, ``to_filter`` of an empty filter."""

from __future__ import annotations

import pytest

from core.filters import SearchFilter
from core.records import Hit, ImageMetadata
from gateway.metadata import to_conditions, to_message, write_metadata
from gateway.servicers import to_filter, to_response
from search.cutoff import Cutoff
from search.engine import SearchResult
from text2image.v1 import text2image_pb2 as pb

METADATA = [
    ImageMetadata(640, 480, 12_345, "JPEG", 1_700_000_000_123_456, None),
    ImageMetadata(1, 2, 3, "PNG", None, -62_135_596_800_000_000),  # the year 1
    ImageMetadata(0, 0, 0, "", None, None),  # every value the default: the message is still set
    ImageMetadata(7, 8, 9, "WEBP", -1, 253_402_300_799_999_999),  # just before the epoch; the last microsecond of 9999
]


@pytest.mark.parametrize("metadata", METADATA, ids=["jpeg", "year-1", "defaults", "edges"])
def test_write_metadata_is_to_message(metadata: ImageMetadata) -> None:
    hit = pb.Hit()
    write_metadata(hit.metadata, metadata)
    assert hit.HasField("metadata")
    assert hit.metadata == to_message(metadata)
    assert hit.SerializeToString(deterministic=True) == pb.Hit(metadata=to_message(metadata)).SerializeToString(deterministic=True)


def test_to_response_is_the_response_of_hit_messages() -> None:
    hits = [Hit(f"v{i}", f"file:///images/{i}.jpg", 0.9 - i / 10, ["cat", "red"][: i % 3], METADATA[i % 4] if i % 5 else None) for i in range(9)]
    result = SearchResult(hits, "images_1", 12.5, "clip", 9, True, Cutoff.AUTOCUT, 0.42, 3, "token")
    expected = pb.SearchResponse(
        hits=[pb.Hit(id=h.id, uri=h.uri, score=h.score, labels=h.labels, metadata=to_message(h.metadata)) for h in hits],
        model_id="clip",
        took_ms=12.5,
        query_truncated=True,
        query_tokens=9,
        collection="images_1",
        cutoff=pb.CUTOFF_AUTOCUT,
        cutoff_score=0.42,
        cutoff_dropped=3,
        next_page_token="token",
    )
    response = to_response(result)
    assert response == expected
    assert [h.HasField("metadata") for h in response.hits] == [h.metadata is not None for h in hits]


@pytest.mark.parametrize(
    "message",
    [pb.Filter(), pb.Filter(labels=pb.LabelFilter()), pb.Filter(metadata=pb.MetadataFilter()), pb.Filter(uri_prefix="")],
    ids=["unset", "empty-labels", "empty-metadata", "empty-prefix"],
)
def test_an_empty_filter_is_no_filter(message: pb.Filter) -> None:
    assert to_filter(message) == SearchFilter() == SearchFilter((), (), (), (), "", to_conditions(pb.MetadataFilter()))
