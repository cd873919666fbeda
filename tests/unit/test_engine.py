"""The search engine over a fake Milvus client and a fake Triton client: reads never write, the
model guard refuses before any encoding, and a read re-resolves once when its collection was dropped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.errors import FailedPrecondition, InvalidArgument
from core.filters import SearchFilter
from core.index import ImageIndex
from core.manifest import Manifest
from core.records import ModelStamp
from inference.images import ImageLimits
from inference.triton_client import TritonEncoder
from search.engine import NOTHING_INDEXED, SearchEngine, UpsertItem
from tests.unit.fake_milvus import FakeMilvusClient
from tests.unit.fake_triton import FakeTritonClient


class Parts:
    def __init__(self, repo: Path) -> None:
        self.milvus = FakeMilvusClient()
        self.triton = FakeTritonClient()
        self.stamp = ModelStamp.of(Manifest.read(repo))
        encoder = TritonEncoder("fake:1", repo, client=self.triton)
        index = ImageIndex("http://fake", "alias", self.stamp, client=self.milvus)  # type: ignore[arg-type]  # the fake client
        self.engine = SearchEngine(encoder, index, max_top_k=10, max_batch=4, limits=ImageLimits(), alias_refresh_s=60)


@pytest.fixture()
async def parts(model_repo: Path) -> AsyncIterator[Parts]:
    made = Parts(model_repo)
    yield made
    await made.engine.close()


def png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_with_nothing_indexed_reads_answer_clearly_and_write_nothing(parts: Parts) -> None:
    with pytest.raises(FailedPrecondition, match=NOTHING_INDEXED):
        await parts.engine.search_text("a dog", 5, SearchFilter(), None, None)
    with pytest.raises(FailedPrecondition, match=NOTHING_INDEXED):
        await parts.engine.search_image(None, "some-id", 5, SearchFilter(), None, True, None)
    info = await parts.engine.info()
    assert info.count == 0 and info.collection == "" and info.stamp == parts.stamp
    assert await parts.engine.delete(["some-id"]) == 0
    assert await parts.engine.ready() is True  # ready to take upserts; searches say what to do
    assert parts.milvus.writes == [] and parts.triton.calls == 0


async def test_an_upsert_creates_the_first_collection(parts: Parts) -> None:
    outcomes = await parts.engine.upsert([UpsertItem("red", png(), "mem://red", ("shapes",))], None)
    assert [o.ok for o in outcomes] == [True]
    assert "create_collection" in parts.milvus.writes and "alias" in parts.milvus.aliases
    result = await parts.engine.search_text("a red square", 5, SearchFilter(), None, None)
    assert [hit.id for hit in result.hits] == ["red"] and result.collection == parts.milvus.aliases["alias"]


async def test_model_guard_refuses_before_encoding(parts: Parts) -> None:
    parts.milvus.add("theirs", ModelStamp("someone/else-clip", "f" * 64, 2).describe())
    parts.milvus.aliases["alias"] = "theirs"
    with pytest.raises(FailedPrecondition, match="someone/else-clip"):
        await parts.engine.search_text("a dog", 5, SearchFilter(), None, None)
    with pytest.raises(FailedPrecondition, match="someone/else-clip"):
        await parts.engine.search_image(png(), None, 5, SearchFilter(), None, False, None)
    assert parts.triton.calls == 0


async def test_reads_within_the_window_skip_the_alias_lookup(parts: Parts) -> None:
    parts.milvus.add("c1", parts.stamp.describe(), {"a": {"uri": "mem://a"}})
    parts.milvus.aliases["alias"] = "c1"
    for _ in range(4):
        await parts.engine.search_text("a dog", 5, SearchFilter(), None, None)
    assert parts.milvus.calls.count("describe_alias") == 1


async def test_a_dropped_collection_is_re_resolved_and_the_read_retried_once(parts: Parts) -> None:
    parts.milvus.add("old", parts.stamp.describe(), {"a": {"uri": "mem://a"}})
    parts.milvus.aliases["alias"] = "old"
    assert (await parts.engine.search_text("a dog", 5, SearchFilter(), None, None)).collection == "old"
    parts.milvus.add("new", parts.stamp.describe(), {"b": {"uri": "mem://b"}})
    parts.milvus.aliases["alias"] = "new"  # a full reindex swapped the alias ...
    parts.milvus.collections.pop("old")  # ... and dropped the old collection
    result = await parts.engine.search_text("a dog", 5, SearchFilter(), None, None)
    assert result.collection == "new" and [h.id for h in result.hits] == ["b"]
    assert parts.milvus.calls.count("describe_alias") == 2


async def test_readiness_needs_triton_and_a_loaded_collection(parts: Parts) -> None:
    parts.milvus.add("c1", parts.stamp.describe())
    parts.milvus.aliases["alias"] = "c1"
    assert await parts.engine.ready() is True
    parts.triton.ready = False
    assert await parts.engine.ready() is False
    parts.triton.ready = True
    parts.milvus.add("theirs", ModelStamp("someone/else-clip", "f" * 64, 2).describe())
    parts.milvus.aliases["alias"] = "theirs"
    assert await parts.engine.ready() is False


async def test_records_and_labels_before_anything_is_indexed(parts: Parts) -> None:
    assert await parts.engine.images(["a", "b"]) == []
    assert await parts.engine.labels(0) == ([], True)
    assert parts.milvus.writes == []


async def test_records_keep_the_order_asked_and_leave_out_unknown_ids(parts: Parts) -> None:
    parts.milvus.add("c1", parts.stamp.describe(), {"a": {"uri": "mem://a", "labels": ["x"]}, "b": {"uri": "mem://b"}})
    parts.milvus.aliases["alias"] = "c1"
    records = await parts.engine.images(["b", "missing", "a"])
    assert [(r.id, r.uri, r.labels) for r in records] == [("b", "mem://b", []), ("a", "mem://a", ["x"])]


async def test_bad_label_scan_size_is_refused_before_milvus(parts: Parts) -> None:
    with pytest.raises(InvalidArgument, match="max_rows must be between 0 and 1000000"):
        await parts.engine.labels(-1)
    assert parts.milvus.calls == []
