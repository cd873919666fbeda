"""The model catalog rescans its repository in a background task of its own: a stuck filesystem
never holds up a search, new versions are picked up and removed ones dropped without a request
asking, and a version or a scan that fails is logged while the others keep serving."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import inference.models
from core.filters import SearchFilter
from core.index import ImageIndex
from core.manifest import TEXT_MODEL, TOKENIZER_FILE, VISION_MODEL, Manifest, served_versions
from core.records import ModelStamp
from inference.images import ImageLimits
from inference.models import RESCAN_S, ModelCatalog
from search.engine import SearchEngine
from tests.support.models import export_beside
from tests.unit.fake_milvus import FakeMilvusClient
from tests.unit.fake_triton import FakeTritonClient

GUARD_S = 5.0  # how long a test waits before it fails instead of hanging (never asserted on)


class Clock:
    """The catalog's clock, moved by hand: no rescan may depend on it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def repo(model_repo: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(model_repo, copy)
    return copy


def remove_version(repo: Path, version: int) -> None:
    for model in (TEXT_MODEL, VISION_MODEL):
        shutil.rmtree(repo / model / str(version))


async def until(condition: Callable[[], bool], what: str) -> None:
    """Yield to the loop until ``condition`` holds; fail after ``GUARD_S`` rather than hang."""
    try:
        async with asyncio.timeout(GUARD_S):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"never happened: {what}")


def rescan_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("rescan ")]


async def test_a_stuck_repository_scan_does_not_delay_searches(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    models = ModelCatalog("fake:1", repo, client=FakeTritonClient(), clock=clock, rescan_s=0.01)
    stamp = ModelStamp.of(Manifest.read(repo))
    milvus = FakeMilvusClient()
    milvus.add("c1", stamp.describe(), {"a": {"uri": "mem://a", "vector": [0.6, 0.8]}})
    milvus.aliases["alias"] = "c1"
    index = ImageIndex("http://fake", "alias", stamp, client=milvus, serves=models.serves)
    engine = SearchEngine(models, index, max_top_k=10, max_batch=4, limits=ImageLimits(), alias_refresh_s=60)
    events: list[str] = []
    entered, release = threading.Event(), threading.Event()

    def stuck_scan(path: Path) -> list[int]:  # a filesystem that hangs (NFS gone away) until the test lets it go
        events.append("scan started")
        entered.set()
        events.append("scan released" if release.wait(GUARD_S) else "scan gave up")
        return served_versions(path)

    monkeypatch.setattr(inference.models, "served_versions", stuck_scan)
    try:
        engine.start()
        await asyncio.to_thread(entered.wait, GUARD_S)  # the background scan is stuck in the repository
        clock.now += RESCAN_S  # a rescan period has passed: the request path still must not scan
        results = await asyncio.gather(*(engine.search_text(f"query {n}", 5, SearchFilter(), None, None) for n in range(3)))
        events.append("searches answered")
        assert [r.model_id for r in results] == ["unit:model"] * 3
        assert models.for_stamp(stamp) is models.newest and models.serves(stamp)  # lookups answer from the last scan
        release.set()
        await until(lambda: "scan released" in events or "scan gave up" in events, "the stuck scan ending")
        assert events[:3] == ["scan started", "searches answered", "scan released"]  # the searches did not wait for it
    finally:
        release.set()
        await engine.close()
    assert rescan_tasks() == []  # close cancelled the background task and waited for it


async def test_a_started_catalog_picks_up_new_versions_and_drops_removed_ones_by_itself(repo: Path) -> None:
    frozen = Clock()  # never moves: only the background task can find the changes
    models = ModelCatalog("fake:1", repo, client=FakeTritonClient(), clock=frozen, rescan_s=0.01)
    first = ModelStamp.of(Manifest.read(repo))
    try:
        models.start()
        second = export_beside(repo, "unit:model-v2", "d" * 64)
        await until(lambda: models.serves(second), "version 2 picked up")
        assert (models.newest.manifest.model_id, models.newest.version) == ("unit:model-v2", "2")
        assert models.stamps == [first, second] and models.serves(first)
        remove_version(repo, 1)
        await until(lambda: not models.serves(first), "version 1 dropped")
        assert models.for_stamp(first) is None and models.stamps == [second] and models.newest.version == "2"
    finally:
        await models.close()
    assert rescan_tasks() == []


async def test_a_broken_version_is_logged_once_and_the_others_keep_serving(repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = ModelStamp.of(Manifest.read(repo))
    second = export_beside(repo, "unit:model-v2", "d" * 64)
    tokenizer = Manifest.read_version(repo, 2).version_dir(repo, TEXT_MODEL) / TOKENIZER_FILE
    good = tokenizer.read_bytes()
    tokenizer.write_text("{ half a tokenizer")
    caplog.set_level(logging.WARNING, logger="inference.models")
    models = ModelCatalog("fake:1", repo, client=FakeTritonClient())  # starts on the versions it can read
    try:
        assert models.stamps == [first] and models.newest.version == "1" and not models.serves(second)
        await models.rescan()
        await models.rescan()
        warnings = [r.getMessage() for r in caplog.records if "is not served" in r.getMessage()]
        assert len(warnings) == 1 and "model version 2 of" in warnings[0], warnings  # logged once, not every scan
        tokenizer.write_bytes(good)  # repaired: the next scan serves it
        await models.rescan()
        assert models.stamps == [first, second] and models.newest.version == "2"
    finally:
        await models.close()
    remove_version(repo, 1)
    tokenizer.write_text("{ half a tokenizer")
    with pytest.raises(FileNotFoundError, match="no exported model"):
        ModelCatalog("fake:1", repo, client=FakeTritonClient())


async def test_a_failing_scan_is_logged_and_the_catalog_keeps_serving(repo: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    models = ModelCatalog("fake:1", repo, client=FakeTritonClient(), clock=clock, rescan_s=0.01)
    first = ModelStamp.of(Manifest.read(repo))
    scans: list[str] = []

    def failing_scan(path: Path) -> list[int]:
        scans.append("failed")
        raise OSError("Stale file handle")

    def empty_scan(path: Path) -> list[int]:  # the volume is unmounted: no version at all
        scans.append("empty")
        return []

    caplog.set_level(logging.WARNING, logger="inference.models")
    try:
        models.start()
        monkeypatch.setattr(inference.models, "served_versions", failing_scan)
        clock.now += RESCAN_S
        await until(lambda: scans.count("failed") >= 3, "three failed scans")
        assert models.for_stamp(first) is models.newest and models.stamps == [first]
        assert sum("Stale file handle" in r.getMessage() for r in caplog.records) == 1  # logged once while it lasts
        monkeypatch.setattr(inference.models, "served_versions", empty_scan)
        await until(lambda: scans.count("empty") >= 2, "two empty scans")
        assert models.serves(first) and models.newest.version == "1"
        assert sum("no servable model version" in r.getMessage() for r in caplog.records) == 1
        monkeypatch.setattr(inference.models, "served_versions", served_versions)
        second = export_beside(repo, "unit:model-v2", "d" * 64)
        await until(lambda: models.serves(second), "version 2 picked up after the repository came back")
        assert rescan_tasks() != []  # the task outlived the failures
    finally:
        await models.close()
    assert rescan_tasks() == []
