"""The fixed costs of a small reindex run overlap: what the job waits on before and after the pipeline, in what order.

A small run spends most of its seconds outside the pipeline (issue 23: "12 indexed in 8.4 s:
listing and hashing 5.0 s, pipeline 0.2 s, deletes, sealing and checks 3.2 s"). These tests pin
the order of the waits, not their length: the decode workers start before the listing, the
collection is read while the source is listed, the workers are let go before the seal, and the
seal asks Milvus again well within a second. Triton and Milvus are ``tests.unit.fake_reindex``'s.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from core.index import ImageIndex
from core.records import ModelStamp, make_row
from reindex import job
from reindex.job import Reindexer
from reindex.sources import ImageFile, Source
from tests.unit.fake_milvus import FakeMilvusClient
from tests.unit.fake_reindex import FakeEncoder, MemoryIndex

NAMES = ["a.png", "b.png", "c.png"]


def photos(folder: Path) -> Path:
    folder.mkdir()
    for name in NAMES:
        Image.new("RGB", (32, 32), (200, 10, 10)).save(folder / name)
    return folder


class Events:
    def __init__(self) -> None:
        self.order: list[str] = []
        self.lock = threading.Lock()

    def add(self, what: str) -> None:
        with self.lock:
            self.order.append(what)


class WatchedSource(Source):
    """A folder whose listing waits (up to 10 s) for the collection's rows to be read, and says whether they were."""

    def __init__(self, root: str, events: Events, stored: threading.Event):
        super().__init__(root)
        self.events, self.stored = events, stored

    def __getstate__(self) -> dict[str, Any]:  # the decode workers get the folder, not the test's events
        return {key: value for key, value in self.__dict__.items() if key not in ("events", "stored")}

    def list(self) -> list[ImageFile]:
        self.events.add("list")
        self.events.add("list saw the rows read" if self.stored.wait(10) else "list waited alone")
        return super().list()


class WatchedIndex(MemoryIndex):
    def __init__(self, events: Events, stored: threading.Event):
        super().__init__()
        self.events, self.stored_event = events, stored

    def stored(self, collection: str) -> dict[str, tuple[str, str]]:
        self.events.add("stored")
        self.stored_event.set()
        return super().stored(collection)

    def seal(self, collection: str) -> bool:
        self.events.add("seal")
        return True


@pytest.fixture()
def watched(monkeypatch: pytest.MonkeyPatch) -> Events:
    """Events that the job's decode pool records too: started, stopped (without waiting) and shut down."""
    events = Events()
    base = job.Decoders

    class Decoders(base):  # type: ignore[misc, valid-type]
        def __init__(self, workers: int):
            events.add("pool started")
            super().__init__(workers)

        def stop(self) -> None:
            events.add("pool stopped")
            super().stop()

    monkeypatch.setattr(job, "Decoders", Decoders)
    return events


def run(index: MemoryIndex, source: Source, **kwargs: Any) -> None:
    report = asyncio.run(Reindexer(FakeEncoder(), index, workers=1, batch_size=2).run(source, progress=False, **kwargs))
    assert report.exit_code() == 0 and report.indexed == len(NAMES)


def test_the_decode_workers_start_before_the_listing_and_stop_before_the_seal(tmp_path: Path, watched: Events) -> None:
    stored = threading.Event()
    stored.set()  # this test is about the pool
    run(WatchedIndex(watched, stored), WatchedSource(str(photos(tmp_path / "p")), watched, stored))
    order = watched.order
    assert order.index("pool started") < order.index("list")
    assert order.index("pool stopped") < order.index("seal")


def test_an_incremental_run_reads_its_collection_while_it_lists(tmp_path: Path, watched: Events) -> None:
    stored = threading.Event()
    run(WatchedIndex(watched, stored), WatchedSource(str(photos(tmp_path / "p")), watched, stored))
    assert "list saw the rows read" in watched.order, watched.order


def test_a_full_run_lists_before_it_drops_anything(tmp_path: Path, watched: Events) -> None:
    stored = threading.Event()
    stored.set()  # a full run reads no rows of the collection it replaces

    class Orphaned(WatchedIndex):
        def orphans(self) -> list[str]:
            self.events.add("orphans")
            return []

    run(Orphaned(watched, stored), WatchedSource(str(photos(tmp_path / "p")), watched, stored), full=True)
    assert watched.order.index("list") < watched.order.index("orphans")


class CountedReads(Source):
    """A folder whose reads in this process (hashing; not the decode workers') count how many run at once, each waiting up to 5 s for a second."""

    def __init__(self, root: str):
        super().__init__(root)
        self.lock, self.active, self.most, self.together = threading.Lock(), 0, 0, threading.Event()

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("lock", "together")}

    def read(self, image: ImageFile, max_bytes: int) -> bytes:
        if "together" in self.__dict__:
            with self.lock:
                self.active += 1
                self.most = max(self.most, self.active)
                if self.active > 1:
                    self.together.set()
            self.together.wait(5)
            with self.lock:
                self.active -= 1
        return super().read(image, max_bytes)


def test_files_are_hashed_several_at_a_time(tmp_path: Path) -> None:
    source = CountedReads(str(photos(tmp_path / "p")))
    run(MemoryIndex(), source)
    assert source.most > 1


def test_seal_asks_again_within_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeMilvusClient()
    index = ImageIndex("http://fake:19530", "alias", ModelStamp("unit:model", "c" * 64, 2), timeout_s=5.0, client=client)
    name = index.new_collection()
    answers = iter([3, 3, 3, 0])
    real = client.describe_index

    def describe_index(collection_name: str, index_name: str, /, *, timeout: float | None = None) -> dict[str, Any]:
        return {**real(collection_name, index_name, timeout=timeout), "pending_index_rows": next(answers)}

    pauses: list[float] = []
    monkeypatch.setattr(client, "describe_index", describe_index)
    monkeypatch.setattr("core.milvus_rows.time.sleep", pauses.append)
    assert index.seal(name)
    assert len(pauses) == 3 and pauses[0] < 0.5 and pauses == sorted(pauses) and max(pauses) <= 1.0


def test_the_first_run_into_an_alias_does_not_scan_the_collection_it_just_created() -> None:
    client = FakeMilvusClient()
    index = ImageIndex("http://fake:19530", "alias", ModelStamp("unit:model", "c" * 64, 2), timeout_s=5.0, client=client)
    name = index.ensure_active()
    assert index.stored(name) == {} and "query_iterator" not in client.calls
    index.upsert(name, [make_row("a", np.ones(2, dtype=np.float32), "file:///a", [], "h", "s")])
    assert index.stored(name) == {"a": ("h", "s")} and "query_iterator" in client.calls  # written since: scanned
    again = ImageIndex("http://fake:19530", "alias", ModelStamp("unit:model", "c" * 64, 2), timeout_s=5.0, client=client)
    assert again.stored(again.ensure_active()) == {"a": ("h", "s")}  # another process (a rerun) did not create it: it scans


def test_a_decode_worker_imports_no_settings_machinery() -> None:
    """Each spawned decode worker imports ``reindex.decoding``; pydantic-settings alone cost it about 0.3 s of CPU on this machine."""
    probe = "import sys, reindex.decoding; print(sorted(m for m in ('core.settings', 'pydantic_settings', 'pymilvus', 'tritonclient') if m in sys.modules))"
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    assert found.strip() == "[]"
