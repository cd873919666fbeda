"""The search engine over a fake Milvus client and a fake Triton client: reads never write, the
model guard refuses before any encoding, and a read re-resolves once when its collection was dropped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.errors import FailedPrecondition, InvalidArgument
from core.filters import SearchFilter
from core.records import ModelStamp
from search.engine import NOTHING_INDEXED, UpsertItem
from tests.support.engine import Parts
from tests.support.images import png
from tests.support.models import export_beside


@pytest.fixture()
async def parts(model_repo: Path) -> AsyncIterator[Parts]:
    made = Parts(model_repo)
    yield made
    await made.engine.close()


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
    parts.milvus.add("c1", parts.stamp.describe(), {"a": {"uri": "mem://a", "vector": [1.0, 0.0]}})
    parts.milvus.aliases["alias"] = "c1"
    for _ in range(4):
        await parts.engine.search_text("a dog", 5, SearchFilter(), None, None)
    assert parts.milvus.calls.count("describe_alias") == 1


async def test_a_dropped_collection_is_re_resolved_and_the_read_retried_once(parts: Parts) -> None:
    parts.milvus.add("old", parts.stamp.describe(), {"a": {"uri": "mem://a", "vector": [1.0, 0.0]}})
    parts.milvus.aliases["alias"] = "old"
    assert (await parts.engine.search_text("a dog", 5, SearchFilter(), None, None)).collection == "old"
    parts.milvus.add("new", parts.stamp.describe(), {"b": {"uri": "mem://b", "vector": [0.0, 1.0]}})
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


async def test_each_request_is_encoded_by_the_model_of_the_collection_that_answers(model_repo: Path, tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(model_repo, repo)
    made = Parts(repo)
    try:
        made.milvus.add("v1", made.stamp.describe(), {"a": {"uri": "mem://a", "vector": [1.0, 0.0]}})
        made.milvus.aliases["alias"] = "v1"
        first = await made.engine.search_text("a dog", 5, SearchFilter(), None, None)
        assert (first.model_id, made.triton.versions) == ("unit:model", ["1"])
        # A rollout: version 2 is exported beside version 1, a collection filled with it, and the alias swapped.
        v2 = export_beside(repo, "unit:model-v2", "d" * 64)
        made.milvus.add("v2", v2.describe(), {"b": {"uri": "mem://b", "vector": [0.0, 1.0]}})
        made.milvus.aliases["alias"] = "v2"
        made.milvus.collections.pop("v1")  # dropped: the gateway re-resolves at once
        await made.models.rescan()  # what the started catalog does every RESCAN_S: it finds version 2
        second = await made.engine.search_text("a dog", 5, SearchFilter(), None, None)
        assert (second.collection, second.model_id, made.triton.versions[-1]) == ("v2", "unit:model-v2", "2")
        embedded = await made.engine.embed_texts(["a cat"], None)
        assert embedded.model_id == "unit:model-v2" and made.triton.versions[-1] == "2"
        # Swapped back (a rollback): the query the gateway had encoded with version 2 is encoded again with version 1.
        made.milvus.add("v1", made.stamp.describe(), {"a": {"uri": "mem://a", "vector": [1.0, 0.0]}})
        made.milvus.aliases["alias"] = "v1"
        made.milvus.collections.pop("v2")
        back = await made.engine.search_text("a dog", 5, SearchFilter(), None, None)
        assert (back.collection, back.model_id, made.triton.versions[-2:]) == ("v1", "unit:model", ["2", "1"])
        # Once version 1 is gone from the repository, its collection is refused, not searched with version 2.
        for model in ("clip_text", "clip_vision"):
            shutil.rmtree(repo / model / "1")
        await made.models.rescan()
        with pytest.raises(FailedPrecondition, match="no longer serves"):
            await made.engine.search_text("a new query", 5, SearchFilter(), None, None)
    finally:
        await made.engine.close()
