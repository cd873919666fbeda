"""Typed metadata on the real stack: UpsertImages and the reindex job store it, GetImages and hits return it, range filters select exactly, a schema-2 collection refuses them.

The module runs a gateway of its own on an alias of its own (the session's Milvus and Triton), and
drops that alias's collections at the end, so the other tests never see its rows or its swaps.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2
from PIL import Image

from core.index import ImageIndex
from core.manifest import Manifest
from core.records import ModelStamp
from devstack.process import ManagedProcess
from devstack.stack import LocalStack
from t2i.client import GatewayClient
from tests.support.polling import wait_for
from tests.support.stack import GATEWAY_ENV, PROJECT_ROOT, health_status, start_gateway
from text2image.v1 import text2image_pb2 as pb

MAY_2019, JAN_2020 = 1_557_126_489, 1_577_934_245  # 2019-05-06T07:08:09Z, 2020-01-02T03:04:05Z


@dataclass
class Typed:
    alias: str
    env: dict[str, str]
    gateway: ManagedProcess
    client: GatewayClient
    index: ImageIndex

    @property
    def address(self) -> str:
        assert self.gateway.address is not None
        return self.gateway.address


def encoded(format: str, size: tuple[int, int], colour: tuple[int, int, int], capture: str | None = None) -> bytes:
    buffer = io.BytesIO()
    extra: dict[str, Any] = {}
    if capture is not None:
        exif = Image.Exif()
        exif.get_ifd(0x8769)[36867] = capture
        extra["exif"] = exif.tobytes()
    Image.new("RGB", size, colour).save(buffer, format=format, **extra)
    return buffer.getvalue()


# id: (format, size, EXIF DateTimeOriginal, ImageItem.modified_time in seconds or None)
ITEMS: dict[str, tuple[str, tuple[int, int], str | None, int | None]] = {
    "small.png": ("PNG", (20, 20), None, MAY_2019),
    "wide.jpg": ("JPEG", (120, 40), "2019:05:06 07:08:09", JAN_2020),
    "tall.jpg": ("JPEG", (40, 100), None, None),
    "square.gif": ("GIF", (64, 64), None, JAN_2020 + 60),
    "photo.webp": ("WEBP", (80, 60), None, MAY_2019 - 1),
}
CONTENT = {item_id: encoded(f, size, (30 * n, 200 - 30 * n, 90), capture) for n, (item_id, (f, size, capture, _)) in enumerate(ITEMS.items())}


@pytest.fixture(scope="module")
def typed(stack: LocalStack, tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Typed]:
    alias = f"t2i_meta_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **stack.env(), **GATEWAY_ENV, "T2I_COLLECTION_ALIAS": alias, "T2I_ALIAS_REFRESH_S": "0"}
    gateway = start_gateway("gateway-metadata", env, tmp_path_factory.mktemp("metadata") / "gateway.log")
    index = ImageIndex(stack.milvus_uri, alias, ModelStamp.of(Manifest.read(tiny_repo)), timeout_s=30, token=stack.milvus_token)
    assert gateway.address is not None
    client = GatewayClient(gateway.address, timeout_s=30, token=stack.token("write"))
    try:
        wait_for(lambda: health_status(gateway.address or "") == health_pb2.HealthCheckResponse.SERVING, 60, "SERVING")
        yield Typed(alias, env, gateway, client, index)
    finally:
        client.close()
        gateway.stop()
        port = index._connect()
        for name in (alias, f"{alias}_previous"):
            port.drop_alias(name, timeout=30)  # a missing alias is no error
        for name in port.list_collections(timeout=30):
            if name.startswith(f"{alias}_"):
                port.drop_collection(name, timeout=60)
        index.close()


def serving(typed: Typed) -> None:
    assert typed.gateway.alive()
    wait_for(lambda: health_status(typed.address) == health_pb2.HealthCheckResponse.SERVING, 10, "SERVING")


def reindex(typed: Typed, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "t2i.cli", "reindex", *args], env=typed.env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)


def found(typed: Typed, metadata: pb.MetadataFilter | None = None, **fields: Any) -> set[str]:
    response = typed.client.search_text("a photo", top_k=50, filter=pb.Filter(metadata=metadata, **fields))
    return {hit.id for hit in response.hits}


def refused(typed: Typed, code: grpc.StatusCode, metadata: pb.MetadataFilter) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        typed.client.search_text("a photo", top_k=5, filter=pb.Filter(metadata=metadata))
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


def ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def test_upserts_store_the_metadata_and_records_and_hits_return_it(typed: Typed) -> None:
    items = [
        pb.ImageItem(id=i, content=CONTENT[i], uri=f"mem://{i}", modified_time=None if mtime is None else ts(mtime)) for i, (_, _, _, mtime) in ITEMS.items()
    ]
    response = typed.client.index.UpsertImages(pb.UpsertImagesRequest(items=items), timeout=60)
    assert response.upserted == len(ITEMS) and response.failed == 0
    records = {r.id: r.metadata for r in typed.client.index.GetImages(pb.GetImagesRequest(ids=list(ITEMS)), timeout=30).images}
    for item_id, (image_format, (width, height), capture, mtime) in ITEMS.items():
        expected = pb.ImageMetadata(width=width, height=height, bytes=len(CONTENT[item_id]), format=image_format)
        if mtime is not None:
            expected.modified_time.CopyFrom(ts(mtime))
        if capture is not None:
            expected.capture_time.CopyFrom(ts(MAY_2019))  # the EXIF DateTimeOriginal, read as UTC
        assert records[item_id] == expected, item_id
    hits = typed.client.search_text("a photo", top_k=10).hits
    assert {h.id: h.metadata for h in hits} == records  # every hit carries what GetImages returns

    again = typed.client.index.UpsertImages(pb.UpsertImagesRequest(items=items[:1]), timeout=60)
    assert again.results[0].unchanged  # the same bytes and time: nothing rewritten
    touched = pb.ImageItem(id=items[0].id, content=items[0].content, uri=items[0].uri, modified_time=ts(MAY_2019 + 5))
    assert not typed.client.index.UpsertImages(pb.UpsertImagesRequest(items=[touched]), timeout=60).results[0].unchanged
    stored = typed.client.index.GetImages(pb.GetImagesRequest(ids=[items[0].id]), timeout=30).images[0].metadata
    assert stored.modified_time == ts(MAY_2019 + 5)  # a new time, the same bytes: the stored time follows
    back = pb.ImageItem(id=items[0].id, content=items[0].content, uri=items[0].uri, modified_time=ts(MAY_2019))
    assert typed.client.index.UpsertImages(pb.UpsertImagesRequest(items=[back]), timeout=60).upserted == 1
    serving(typed)


def test_range_filters_select_exactly_the_right_images(typed: Typed) -> None:
    assert found(typed) == set(ITEMS)
    assert found(typed, pb.MetadataFilter(width=pb.Int64Range(min=40, max=80))) == {"tall.jpg", "square.gif", "photo.webp"}  # inclusive
    assert found(typed, pb.MetadataFilter(width=pb.Int64Range(max=20))) == {"small.png"}
    assert found(typed, pb.MetadataFilter(height=pb.Int64Range(min=60))) == {"tall.jpg", "square.gif", "photo.webp"}
    assert found(typed, pb.MetadataFilter(height=pb.Int64Range(min=40, max=40))) == {"wide.jpg"}
    size = {i: len(c) for i, c in CONTENT.items()}
    middle = sorted(size.values())[2]
    assert found(typed, pb.MetadataFilter(bytes=pb.Int64Range(min=middle))) == {i for i, n in size.items() if n >= middle}
    assert found(typed, pb.MetadataFilter(bytes=pb.Int64Range(max=middle - 1))) == {i for i, n in size.items() if n < middle}
    assert found(typed, pb.MetadataFilter(formats=["jpeg", "GIF"])) == {"wide.jpg", "tall.jpg", "square.gif"}
    assert found(typed, pb.MetadataFilter(formats=["png"])) == {"small.png"}
    # Times: inclusive bounds; tall.jpg has none and never matches a set range.
    assert found(typed, pb.MetadataFilter(modified_time=pb.TimeRange(since=ts(MAY_2019)))) == {"small.png", "wide.jpg", "square.gif"}
    assert found(typed, pb.MetadataFilter(modified_time=pb.TimeRange(until=ts(MAY_2019)))) == {"small.png", "photo.webp"}
    assert found(typed, pb.MetadataFilter(modified_time=pb.TimeRange(since=ts(JAN_2020), until=ts(JAN_2020)))) == {"wide.jpg"}
    assert found(typed, pb.MetadataFilter(modified_time=pb.TimeRange(since=Timestamp(seconds=JAN_2020, nanos=1)))) == {"square.gif"}
    # The EXIF capture time: only wide.jpg has one.
    assert found(typed, pb.MetadataFilter(capture_time=pb.TimeRange(until=ts(MAY_2019)))) == {"wide.jpg"}
    assert found(typed, pb.MetadataFilter(capture_time=pb.TimeRange(since=ts(MAY_2019 + 1)))) == set()
    assert found(typed, pb.MetadataFilter(capture_time=pb.TimeRange(since=ts(0)))) == {"wide.jpg"}
    # With the other filters, and through SearchImage.
    assert found(typed, pb.MetadataFilter(formats=["JPEG"], width=pb.Int64Range(min=100)), uri_prefix="mem://w") == {"wide.jpg"}
    by_id = typed.client.search_image(top_k=10, id="small.png", exclude_self=True, filter=pb.Filter(metadata=pb.MetadataFilter(formats=["JPEG"])))
    assert {h.id for h in by_id.hits} == {"wide.jpg", "tall.jpg"}
    serving(typed)


def test_bad_ranges_are_invalid_argument_naming_the_field(typed: Typed) -> None:
    bad = grpc.StatusCode.INVALID_ARGUMENT
    assert "filter.metadata.width: min 9 is greater than max 3" in refused(typed, bad, pb.MetadataFilter(width=pb.Int64Range(min=9, max=3)))
    assert "filter.metadata.bytes" in refused(typed, bad, pb.MetadataFilter(bytes=pb.Int64Range(min=2, max=1)))
    message = refused(typed, bad, pb.MetadataFilter(modified_time=pb.TimeRange(since=ts(JAN_2020), until=ts(MAY_2019))))
    assert "filter.metadata.modified_time: since 2020-01-02T03:04:05Z is later than until 2019-05-06T07:08:09Z" in message
    assert "filter.metadata.capture_time: since" in refused(typed, bad, pb.MetadataFilter(capture_time=pb.TimeRange(since=ts(2), until=ts(1))))
    assert "filter.metadata.formats[0]: unknown format 'HEIC'" in refused(typed, bad, pb.MetadataFilter(formats=["HEIC"]))
    assert "at most 16" in refused(typed, bad, pb.MetadataFilter(formats=["PNG"] * 17))
    assert "filter.metadata.modified_time.since: nanos" in refused(typed, bad, pb.MetadataFilter(modified_time=pb.TimeRange(since=Timestamp(nanos=-5))))
    far = pb.MetadataFilter(capture_time=pb.TimeRange(until=Timestamp(seconds=10**13)))
    assert "filter.metadata.capture_time.until" in refused(typed, bad, far)
    item = pb.ImageItem(id="bad-time.png", content=CONTENT["small.png"], uri="mem://bad", modified_time=Timestamp(seconds=10**13))
    ok = pb.ImageItem(id="fine.png", content=CONTENT["small.png"], uri="mem://fine")
    results = typed.client.index.UpsertImages(pb.UpsertImagesRequest(items=[item, ok]), timeout=60).results
    assert [(r.ok, r.error) for r in results] == [(False, "modified_time is not a valid timestamp (years 1 to 9999)"), (True, "")]
    typed.client.index.DeleteImages(pb.DeleteImagesRequest(ids=["fine.png"]), timeout=30)
    serving(typed)


def test_a_reindex_stores_each_file_s_size_and_modification_time(typed: Typed, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "old").mkdir(parents=True)
    files = {
        "old/first.png": (MAY_2019, CONTENT["small.png"]),
        "second.jpg": (JAN_2020, CONTENT["wide.jpg"]),
        "third.gif": (JAN_2020 + 7, CONTENT["square.gif"]),
    }
    for name, (mtime, data) in files.items():
        (folder / name).write_bytes(data)
        os.utime(folder / name, (mtime, mtime))
    done = reindex(typed, str(folder), "--full")
    assert done.returncode == 0 and "3 indexed" in done.stdout, done.stdout + done.stderr
    records = {r.id: r.metadata for r in typed.client.index.GetImages(pb.GetImagesRequest(ids=list(files)), timeout=30).images}
    assert {i: (m.modified_time.seconds, m.bytes, m.format) for i, m in records.items()} == {
        "old/first.png": (MAY_2019, len(CONTENT["small.png"]), "PNG"),
        "second.jpg": (JAN_2020, len(CONTENT["wide.jpg"]), "JPEG"),
        "third.gif": (JAN_2020 + 7, len(CONTENT["square.gif"]), "GIF"),
    }
    assert records["second.jpg"].capture_time == ts(MAY_2019) and (records["second.jpg"].width, records["second.jpg"].height) == (120, 40)
    assert found(typed, pb.MetadataFilter(modified_time=pb.TimeRange(since=ts(JAN_2020)))) == {"second.jpg", "third.gif"}

    unchanged = reindex(typed, str(folder))
    assert unchanged.returncode == 0 and "0 indexed, 3 unchanged" in unchanged.stdout, unchanged.stdout
    os.utime(folder / "third.gif", (JAN_2020 + 8, JAN_2020 + 8))  # touched: the same bytes, a new time
    touched = reindex(typed, str(folder))
    assert touched.returncode == 0 and "1 indexed, 2 unchanged" in touched.stdout, touched.stdout
    third = typed.client.index.GetImages(pb.GetImagesRequest(ids=["third.gif"]), timeout=30).images[0].metadata
    assert third.modified_time == ts(JAN_2020 + 8)
    serving(typed)


def test_a_schema_2_collection_serves_refuses_metadata_filters_and_a_full_reindex_moves_it(typed: Typed, tmp_path: Path) -> None:
    from pymilvus import DataType, MilvusClient

    stamp = typed.index.stamp
    old = f"{typed.alias}_schema2"
    milvus = MilvusClient(uri=typed.index.uri, token=typed.index.token)
    try:
        schema = milvus.create_schema(auto_id=False, enable_dynamic_field=False, description=stamp.describe(2))  # as the code before typed metadata made it
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=stamp.dimension)
        schema.add_field("uri", DataType.VARCHAR, max_length=2048)
        schema.add_field("labels", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=32, max_length=128)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("source", DataType.VARCHAR, max_length=2048)
        params = milvus.prepare_index_params()
        params.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 64})
        milvus.create_collection(old, schema=schema, index_params=params, consistency_level="Session")
        milvus.load_collection(old)
    finally:
        milvus.close()
    typed.index.swap_alias(old)
    items = [pb.ImageItem(id=i, content=CONTENT[i], uri=f"mem://{i}", modified_time=ts(MAY_2019)) for i in ("small.png", "wide.jpg")]
    assert typed.client.index.UpsertImages(pb.UpsertImagesRequest(items=items), timeout=60).upserted == 2  # it takes writes, in its own fields
    response = typed.client.search_text("a photo", top_k=5)
    assert response.collection == old and {h.id for h in response.hits} == {"small.png", "wide.jpg"}
    assert all(not h.HasField("metadata") for h in response.hits)
    assert all(not r.HasField("metadata") for r in typed.client.index.GetImages(pb.GetImagesRequest(ids=["small.png"]), timeout=30).images)
    message = refused(typed, grpc.StatusCode.FAILED_PRECONDITION, pb.MetadataFilter(width=pb.Int64Range(min=1)))
    assert f"collection {old} was built before typed metadata (schema 2): run 't2i reindex --full'" in message
    with pytest.raises(grpc.RpcError) as caught:
        typed.client.search_image(top_k=3, id="small.png", filter=pb.Filter(metadata=pb.MetadataFilter(formats=["PNG"])))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert {h.id for h in typed.client.search_image(top_k=3, id="small.png").hits} == {"small.png", "wide.jpg"}  # searches still work
    serving(typed)

    folder = tmp_path / "again"
    folder.mkdir()
    (folder / "small.png").write_bytes(CONTENT["small.png"])
    done = reindex(typed, str(folder), "--full")
    assert done.returncode == 0, done.stdout + done.stderr
    moved = typed.client.search_text("a photo", top_k=5, filter=pb.Filter(metadata=pb.MetadataFilter(formats=["PNG"])))
    assert moved.collection != old and [h.id for h in moved.hits] == ["small.png"] and moved.hits[0].metadata.width == 20
    serving(typed)
