"""Typed metadata: what a decode reads, the filters built from it, the rows of schema 2 and 3, the gateway's conversions, UpsertImages and the reindex job."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from PIL import Image

from core.errors import FailedPrecondition, InvalidArgument
from core.filters import KNOWN_FORMATS, MAX_TIME_US, MetadataConditions, Range, SearchFilter, build_expression, schema_needed
from core.index import ImageIndex
from core.records import METADATA_FIELDS, SCHEMA_VERSION, UNKNOWN_TIME, ImageMetadata, ModelStamp, item_hash, make_row
from gateway.metadata import micros, modified_time_of, to_conditions, to_message
from gateway.servicers import to_filter
from inference.images import ImageLimits, decode_with_metadata, exif_time
from reindex.decoding import _load
from reindex.job import Reindexer
from reindex.sources import Source, modified_time
from search.engine import UpsertItem
from search.terms import Kind, Term, TermsQuery
from tests.support.engine import Parts
from tests.unit.fake_milvus import FakeMilvusClient, parse_expression
from tests.unit.fake_reindex import FakeEncoder, MemoryIndex
from text2image.v1 import text2image_pb2 as pb

US = 1_000_000
MAY_2019 = 1_557_126_489 * US  # 2019-05-06T07:08:09Z
JAN_2020 = 1_577_934_245 * US  # 2020-01-02T03:04:05Z


def encoded(format: str = "JPEG", size: tuple[int, int] = (40, 30), exif: Image.Exif | bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    extra: dict[str, Any] = {} if exif is None else {"exif": exif if isinstance(exif, bytes) else exif.tobytes()}
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format=format, **extra)
    return buffer.getvalue()


def exif_of(original: str | None = None, date_time: str | None = None, orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    if date_time is not None:
        exif[306] = date_time
    if orientation is not None:
        exif[274] = orientation
    if original is not None:
        exif.get_ifd(0x8769)[36867] = original
    return exif


# -- what a decode reads ----------------------------------------------------------------------------


def test_a_png_has_its_size_bytes_and_format_and_no_capture_time() -> None:
    data = encoded("PNG", (64, 48))
    assert decode_with_metadata(data)[1] == ImageMetadata(64, 48, len(data), "PNG", None, None)


def test_a_jpeg_without_exif_has_no_capture_time() -> None:
    data = encoded("JPEG", (40, 30))
    assert decode_with_metadata(data)[1] == ImageMetadata(40, 30, len(data), "JPEG", None, None)


def test_the_exif_date_time_original_is_the_capture_time_read_as_utc() -> None:
    data = encoded(exif=exif_of(original="2019:05:06 07:08:09", date_time="2020:01:02 03:04:05"))
    assert decode_with_metadata(data)[1].capture_time == MAY_2019  # DateTimeOriginal before DateTime


def test_without_date_time_original_the_exif_date_time_is_taken() -> None:
    assert decode_with_metadata(encoded(exif=exif_of(date_time="2020:01:02 03:04:05")))[1].capture_time == JAN_2020


@pytest.mark.parametrize(
    "exif",
    [
        exif_of(original="garbage", date_time="also garbage"),
        exif_of(original="0000:00:00 00:00:00"),
        exif_of(original="2019:13:45 99:99:99"),
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01",  # an IFD cut short
        b"Exif\x00\x00not a tiff header at all",
    ],
    ids=["garbage", "zeros", "out-of-range", "truncated-ifd", "no-tiff-header"],
)
def test_malformed_exif_is_an_unknown_capture_time_not_an_error(exif: Image.Exif | bytes) -> None:
    data = encoded(exif=exif)
    image, metadata = decode_with_metadata(data)
    assert metadata == ImageMetadata(40, 30, len(data), "JPEG", None, None) and image.size == (40, 30)


def test_width_and_height_are_the_upright_image() -> None:
    metadata = decode_with_metadata(encoded(size=(40, 30), exif=exif_of(orientation=6)))[1]
    assert (metadata.width, metadata.height) == (30, 40)  # rotated by the EXIF orientation, as the model sees it


@pytest.mark.parametrize("format", ["BMP", "GIF", "TIFF", "WEBP"])
def test_other_formats_are_named_as_the_filter_knows_them(format: str) -> None:
    metadata = decode_with_metadata(encoded(format))[1]
    assert metadata.format == format and metadata.format in KNOWN_FORMATS


def test_exif_time_of_bytes_and_odd_values() -> None:
    assert exif_time(b"2019:05:06 07:08:09\x00") == MAY_2019
    assert exif_time("2019:05:06 07:08:09  ") == MAY_2019
    assert exif_time(12) is None and exif_time(None) is None and exif_time("") is None


# -- filters ----------------------------------------------------------------------------------------


def expression(**conditions: Any) -> str:
    return build_expression(SearchFilter(metadata=MetadataConditions(**conditions)))


@pytest.mark.parametrize("name", ["width", "height", "bytes"])
def test_each_integer_range_is_inclusive_and_leaves_unknown_out(name: str) -> None:
    assert expression(**{name: Range(10, 20)}) == f"({name} >= 10) and ({name} <= 20)"
    assert expression(**{name: Range(None, 20)}) == f"({name} >= 1) and ({name} <= 20)"  # 0 is unknown: never matches
    assert expression(**{name: Range(-5)}) == f"({name} >= 1)"
    assert expression(**{name: Range(7, 7)}) == f"({name} >= 7) and ({name} <= 7)"


@pytest.mark.parametrize("name", ["modified_time", "capture_time"])
def test_each_time_range_is_inclusive_and_leaves_unknown_out(name: str) -> None:
    assert expression(**{name: Range(MAY_2019, JAN_2020)}) == f"({name} >= {MAY_2019}) and ({name} <= {JAN_2020})"
    assert expression(**{name: Range(None, 0)}) == f"({name} >= {UNKNOWN_TIME + 1}) and ({name} <= 0)"
    assert expression(**{name: Range(UNKNOWN_TIME - 5)}) == f"({name} >= {UNKNOWN_TIME + 1})"


def test_formats_are_case_insensitive_deduplicated_literals() -> None:
    assert expression(formats=["jpeg", "Png", "JPEG"]) == '(format in ["JPEG", "PNG"])'


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ({"width": Range(20, 10)}, "filter.metadata.width: min 20 is greater than max 10"),
        ({"height": Range(2, 1)}, "filter.metadata.height: min 2 is greater than max 1"),
        ({"bytes": Range(5000, 4999)}, "filter.metadata.bytes: min 5000"),
        ({"modified_time": Range(JAN_2020, MAY_2019)}, "filter.metadata.modified_time: since 2020-01-02T03:04:05Z is later than until 2019-05-06"),
        ({"capture_time": Range(1, 0)}, "filter.metadata.capture_time: since"),
        ({"formats": ["JPEG", "heic"]}, r"filter.metadata.formats\[1\]: unknown format 'heic'"),
        ({"formats": [""]}, r"filter.metadata.formats\[0\]: unknown format"),
        ({"formats": ["JPEG"] * 17}, "filter.metadata.formats holds 17 entries; at most 16"),
        ({"width": Range(2**63)}, "filter.metadata.width.min: .* is not a 64-bit integer"),
        ({"bytes": Range(None, 1.5)}, "filter.metadata.bytes.max"),  # type: ignore[arg-type]
    ],
)
def test_bad_conditions_are_invalid_argument_naming_the_field(conditions: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        expression(**conditions)


def test_a_metadata_filter_needs_schema_3_and_others_do_not() -> None:
    assert schema_needed(expression(width=Range(1))) == 3
    assert schema_needed(build_expression(SearchFilter(all_of=["x"], uri_prefix="/a"))) == 1
    assert schema_needed("plain text") == 1 and build_expression(SearchFilter()) == ""
    typed = build_expression(SearchFilter(any_of=["dog"], metadata=MetadataConditions(formats=["gif"])), exclude_id="a")
    assert typed == '(array_contains_any(labels, ["dog"])) and (id != "a") and (format in ["GIF"])' and schema_needed(typed) == 3


def test_the_fake_evaluates_the_conditions() -> None:
    fields = frozenset({"id", *METADATA_FIELDS})
    row = {"id": "x", **ImageMetadata(100, 50, 900, "PNG", 10, None).row()}
    assert parse_expression(expression(width=Range(100, 100), formats=["png"]), fields)(row)
    assert not parse_expression(expression(width=Range(101)), fields)(row)
    assert parse_expression(expression(modified_time=Range(10, 10)), fields)(row)
    assert not parse_expression(expression(capture_time=Range(None, 10**18)), fields)(row)  # unknown never matches
    with pytest.raises(Exception, match="field width not exist"):
        parse_expression(expression(width=Range(1)), frozenset({"id", "uri"}))


# -- rows of schema 2 and 3 -------------------------------------------------------------------------

STAMP = ModelStamp("test/clip", "0" * 64, 2)
META = ImageMetadata(40, 30, 700, "JPEG", MAY_2019, None)


def test_rows_carry_the_metadata_or_unknown() -> None:
    row = make_row("a", np.ones(2), "/a", [], "h", "/src", META)
    assert (
        {k: row[k] for k in METADATA_FIELDS}
        == {**META.row()}
        == {
            "width": 40,
            "height": 30,
            "bytes": 700,
            "format": "JPEG",
            "modified_time": MAY_2019,
            "capture_time": UNKNOWN_TIME,
        }
    )
    assert ImageMetadata.of_row(row) == META
    bare = make_row("b", np.ones(2), "/b", [], "h")
    assert bare["width"] == 0 and bare["format"] == "" and bare["capture_time"] == UNKNOWN_TIME and ImageMetadata.of_row(bare) is None
    assert ImageMetadata.of_row({"uri": "/x"}) is None  # a row of schema 2


def test_a_schema_2_collection_takes_rows_without_metadata_and_refuses_metadata_filters() -> None:
    client = FakeMilvusClient()
    index = ImageIndex("http://fake", "alias", STAMP, client=client)
    client.add("old", STAMP.describe(2))
    client.collections["old"]["fields"] = frozenset({"id", "vector", "uri", "labels", "content_hash", "source"})
    index.upsert("old", [make_row("a", np.array([1.0, 0.0]), "/a", ["x"], "h", "/src", META)])  # the metadata fields are left out
    assert set(client.collections["old"]["rows"]["a"]) == {"id", "vector", "uri", "labels", "content_hash", "source"}
    assert [(h.id, h.metadata) for h in index.search("old", np.array([1.0, 0.0]), 3)] == [("a", None)]
    assert [(r.id, r.metadata) for r in index.records("old", ["a"])] == [("a", None)]
    with pytest.raises(FailedPrecondition, match=r"collection old was built before typed metadata \(schema 2\): run 't2i reindex --full'"):
        index.search("old", np.array([1.0, 0.0]), 3, expression(width=Range(1)))
    with pytest.raises(FailedPrecondition, match="before typed metadata"):
        index.count("old", expression=expression(formats=["JPEG"]))

    new = index.new_collection("new")
    assert index.schema_version(new) == SCHEMA_VERSION == 3
    index.upsert(new, [make_row("a", np.array([1.0, 0.0]), "/a", ["x"], "h", "/src", META)])
    assert [(h.id, h.metadata) for h in index.search(new, np.array([1.0, 0.0]), 3, expression(width=Range(40, 40)))] == [("a", META)]
    assert index.search(new, np.array([1.0, 0.0]), 3, expression(width=Range(41))) == []
    assert [(r.id, r.metadata) for r in index.records(new, ["a"])] == [("a", META)]


def test_searches_read_the_metadata_fields_only_of_a_collection_that_has_them() -> None:
    client = FakeMilvusClient()
    index = ImageIndex("http://fake", "alias", STAMP, client=client)
    seen: list[list[str]] = []
    search = client.search

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["output_fields"])
        return search(*args, **kwargs)

    client.search = recording  # type: ignore[method-assign]
    client.add("old", STAMP.describe(2))
    index.search("old", np.array([1.0, 0.0]), 3)
    index.search(index.new_collection("new"), np.array([1.0, 0.0]), 3)
    assert seen == [["uri", "labels"], ["uri", "labels", *METADATA_FIELDS]]


# -- the gateway's conversions ----------------------------------------------------------------------


def test_timestamps_become_microseconds_since_rounded_up_until_down() -> None:
    assert micros(Timestamp(seconds=1, nanos=1500), "t") == US + 1
    assert micros(Timestamp(seconds=1, nanos=1500), "t", round_up=True) == US + 2
    assert micros(Timestamp(seconds=1, nanos=2000), "t", round_up=True) == US + 2
    assert micros(Timestamp(seconds=-1), "t") == -US
    with pytest.raises(InvalidArgument, match=r"filter\.metadata\.modified_time\.since: nanos"):
        micros(Timestamp(seconds=1, nanos=-1), "filter.metadata.modified_time.since")
    with pytest.raises(InvalidArgument, match="until: 999999999999 seconds is not a valid timestamp"):
        micros(Timestamp(seconds=999_999_999_999), "until")


def test_to_filter_converts_the_metadata_filter() -> None:
    message = pb.Filter(
        labels=pb.LabelFilter(any_of=["dog"]),
        metadata=pb.MetadataFilter(
            width=pb.Int64Range(min=10),
            height=pb.Int64Range(max=0),
            bytes=pb.Int64Range(min=1, max=2),
            formats=["png"],
            modified_time=pb.TimeRange(since=Timestamp(seconds=5, nanos=1)),
            capture_time=pb.TimeRange(until=Timestamp(seconds=6)),
        ),
    )
    assert to_filter(message).metadata == MetadataConditions(Range(10), Range(None, 0), Range(1, 2), ("png",), Range(5 * US + 1), Range(None, 6 * US))
    assert not to_conditions(pb.MetadataFilter()) and not to_filter(pb.Filter()).metadata
    with pytest.raises(InvalidArgument, match=r"filter\.metadata\.capture_time\.until"):
        to_filter(pb.Filter(metadata=pb.MetadataFilter(capture_time=pb.TimeRange(until=Timestamp(seconds=-(10**12))))))


def test_metadata_messages() -> None:
    message = to_message(ImageMetadata(40, 30, 700, "JPEG", MAY_2019 + 7, None))
    assert message is not None and (message.width, message.height, message.bytes, message.format) == (40, 30, 700, "JPEG")
    assert message.modified_time == Timestamp(seconds=MAY_2019 // US, nanos=7000) and not message.HasField("capture_time")
    assert to_message(None) is None and not pb.Hit(metadata=to_message(None)).HasField("metadata")
    assert modified_time_of(pb.ImageItem()) is None
    assert modified_time_of(pb.ImageItem(modified_time=Timestamp(seconds=2, nanos=3000))) == 2 * US + 3
    assert modified_time_of(pb.ImageItem(modified_time=Timestamp(seconds=2, nanos=-1))) == MAX_TIME_US + 1  # the engine fails that item


# -- UpsertImages -----------------------------------------------------------------------------------


@pytest.fixture()
async def parts(model_repo: Path) -> AsyncIterator[Parts]:
    made = Parts(model_repo)
    yield made
    await made.engine.close()


async def test_upserts_store_the_metadata_and_a_changed_time_rewrites_the_row(parts: Parts) -> None:
    data = encoded(exif=exif_of(original="2019:05:06 07:08:09"))
    assert [o.ok for o in await parts.engine.upsert([UpsertItem("a", data, "/a", (), JAN_2020), UpsertItem("b", encoded("PNG"), "/b", ())], None)] == [True] * 2
    records = {r.id: r.metadata for r in await parts.engine.images(["a", "b"])}
    assert records == {"a": ImageMetadata(40, 30, len(data), "JPEG", JAN_2020, MAY_2019), "b": ImageMetadata(40, 30, len(encoded("PNG")), "PNG")}
    hits = (await parts.engine.search_text("x", 5, SearchFilter(metadata=MetadataConditions(capture_time=Range(MAY_2019, MAY_2019))), None, None)).hits
    assert [(h.id, h.metadata) for h in hits] == [("a", records["a"])]

    again = await parts.engine.upsert([UpsertItem("a", data, "/a", (), JAN_2020)], None)
    assert again[0].unchanged  # same bytes, same time
    touched = await parts.engine.upsert([UpsertItem("a", data, "/a", (), JAN_2020 + 1)], None)
    assert touched[0].ok and not touched[0].unchanged  # same bytes, another time: rewritten, so the stored time is right
    assert (await parts.engine.images(["a"]))[0].metadata == ImageMetadata(40, 30, len(data), "JPEG", JAN_2020 + 1, MAY_2019)


async def test_an_upsert_with_an_invalid_time_fails_that_item_alone(parts: Parts) -> None:
    outcomes = await parts.engine.upsert([UpsertItem("a", encoded(), "/a", (), MAX_TIME_US + 1), UpsertItem("b", encoded(), "/b", (), 0)], None)
    assert [(o.ok, o.error) for o in outcomes] == [(False, "modified_time is not a valid timestamp (years 1 to 9999)"), (True, "")]


async def test_upserts_into_a_schema_2_collection_keep_its_fields_and_hash(parts: Parts) -> None:
    parts.milvus.add("old", parts.stamp.describe(2))
    parts.milvus.collections["old"]["fields"] = frozenset({"id", "vector", "uri", "labels", "content_hash", "source"})
    parts.milvus.aliases["alias"] = "old"
    data = encoded()
    assert (await parts.engine.upsert([UpsertItem("a", data, "/a", (), JAN_2020)], None))[0].ok
    assert parts.milvus.collections["old"]["rows"]["a"]["content_hash"] == item_hash(data, "/a", ())  # schema 2's hash: no time in it
    assert (await parts.engine.upsert([UpsertItem("a", data, "/a", (), JAN_2020 + 1)], None))[0].unchanged
    assert (await parts.engine.images(["a"]))[0].metadata is None
    by_width = SearchFilter(metadata=MetadataConditions(width=Range(1)))
    with pytest.raises(FailedPrecondition, match="collection old was built before typed metadata"):
        await parts.engine.search_text("x", 5, by_width, None, None)
    for exclude_ids in (False, True):  # Search adds its id exclusions to the expression: the schema it needs must survive that
        with pytest.raises(FailedPrecondition, match="collection old was built before typed metadata"):
            await parts.engine.search(TermsQuery([Term(Kind.TEXT, "x"), Term(Kind.ID, "a", -0.5)], 5, by_width, exclude_ids=exclude_ids), None)
    [failed] = await parts.engine.search_batch([TermsQuery([Term(Kind.TEXT, "x")], 5, by_width)], None)
    assert isinstance(failed, FailedPrecondition)
    assert [h.id for h in (await parts.engine.search_text("x", 5, SearchFilter(), None, None)).hits] == ["a"]


# -- the reindex job --------------------------------------------------------------------------------


class RowsIndex(MemoryIndex):
    """``MemoryIndex`` that keeps every row it was given, fields and all."""

    def __init__(self, schema: int = SCHEMA_VERSION) -> None:
        super().__init__(schema=schema)
        self.written: dict[str, dict[str, Any]] = {}

    def upsert(self, collection: str, rows: list[dict[str, Any]]) -> None:
        super().upsert(collection, rows)
        self.written.update({row["id"]: row for row in rows})


def reindex(index: MemoryIndex, folder: Path, **kwargs: Any) -> Any:
    return asyncio.run(Reindexer(FakeEncoder(), index, workers=1, batch_size=2).run(Source(str(folder)), progress=False, **kwargs))


def test_the_listing_gives_each_file_its_modification_time(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(encoded("PNG"))
    os.utime(tmp_path / "a.png", (1_000_000_000, 1_577_934_245))
    assert [(f.id, f.modified_time) for f in Source(str(tmp_path)).list()] == [("a.png", JAN_2020)]


def test_modification_times_of_other_listings() -> None:
    import datetime

    utc = datetime.UTC
    assert modified_time({"LastModified": datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=utc)}) == JAN_2020  # S3
    assert modified_time({"LastModified": datetime.datetime(2020, 1, 2, 3, 4, 5)}) == JAN_2020  # naive: UTC
    assert modified_time({"mtime": "2020-01-02T03:04:05+00:00"}) == JAN_2020
    assert modified_time({"mtime": 1.5}) == 1_500_000 and modified_time({"size": 3}) is None and modified_time({"mtime": "soon"}) is None
    # A time no Timestamp can hold is unknown, never an error that stops the listing.
    assert [modified_time({"mtime": odd}) for odd in (float("nan"), float("inf"), -float("inf"), 1e12, -1e12)] == [None] * 5


def test_the_decode_worker_reads_the_metadata_on_its_one_decode(tmp_path: Path) -> None:
    data = encoded(exif=exif_of(original="2019:05:06 07:08:09"))
    (tmp_path / "a.jpg").write_bytes(data)
    os.utime(tmp_path / "a.jpg", (1_000_000_000, 1_577_934_245))
    source = Source(str(tmp_path))
    crop, metadata = _load(source, source.list()[0], FakeEncoder.preprocess_config, ImageLimits())
    assert crop.shape == (16, 16, 3) and metadata == ImageMetadata(40, 30, len(data), "JPEG", JAN_2020, MAY_2019)


def test_a_reindex_stores_the_metadata_and_rewrites_a_touched_file(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(encoded(exif=exif_of(date_time="2020:01:02 03:04:05")))
    (folder / "b.png").write_bytes(encoded("PNG", (20, 60)))
    os.utime(folder / "a.jpg", (0, 1_557_126_489))
    os.utime(folder / "b.png", (0, 1_577_934_245))
    index = RowsIndex()
    first = reindex(index, folder)
    assert first.indexed == 2
    assert ImageMetadata.of_row(index.written["a.jpg"]) == ImageMetadata(40, 30, (folder / "a.jpg").stat().st_size, "JPEG", MAY_2019, JAN_2020)
    assert ImageMetadata.of_row(index.written["b.png"]) == ImageMetadata(20, 60, (folder / "b.png").stat().st_size, "PNG", JAN_2020, None)
    assert reindex(index, folder).unchanged == 2
    os.utime(folder / "b.png", (0, 1_577_934_246))  # touched: same bytes, a new time
    index.written.clear()
    again = reindex(index, folder)
    assert (again.indexed, again.unchanged) == (1, 1) and index.written["b.png"]["modified_time"] == JAN_2020 + US


def test_an_incremental_reindex_of_a_schema_2_collection_ignores_times(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(encoded("PNG"))
    index = RowsIndex(schema=2)
    assert reindex(index, folder).indexed == 1
    assert index.rows["a.png"][0] == item_hash((folder / "a.png").read_bytes(), str(folder / "a.png"), ())  # schema 2's hash
    os.utime(folder / "a.png", (0, 1_577_934_246))
    assert reindex(index, folder).unchanged == 1  # schema 2 does not store the time: nothing to rewrite
    full = reindex(index, folder, full=True)
    assert full.promoted and index.schemas[index.alias or ""] == SCHEMA_VERSION  # --full moves it to schema 3
    assert index.written["a.png"]["modified_time"] == 1_577_934_246 * US
