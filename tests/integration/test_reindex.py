"""The reindex job: incremental, --full with queries during the rebuild, and killed runs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from gateway.index import CollectionMissing, ImageIndex, item_hash
from inference.samples import sample_photos
from reindex.job import scan_folder
from t2i.client import GatewayClient
from t2i.stack import LocalStack
from tests.integration.conftest import GATEWAY_ENV, PROJECT_ROOT, assert_serving, run_t2i, wait_for
from tests.integration.test_bad_input import png_bomb
from text2image.v1 import text2image_pb2 as pb


def expected_rows(folder: Path) -> dict[str, str]:
    """What the index must hold for ``folder``: every decodable image, by id and hash."""
    from inference.images import decode_image

    rows = {}
    for image in scan_folder(folder):
        data = image.path.read_bytes()
        try:
            decode_image(data)
        except Exception:  # noqa: BLE001 - undecodable files are not indexed
            continue
        rows[image.id] = item_hash(data, image.uri, image.labels)
    return rows


def synthetic_photos(folder: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        sub = folder / ("even" if i % 2 == 0 else "odd")
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"img_{i:04d}.jpg", quality=85)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "animals").mkdir(parents=True)
    (root / "things").mkdir()
    for path in sample_photos(6):
        target = root / ("animals" if path.stem in ("chelsea", "horse") else "things") / path.name
        shutil.copyfile(path, target)
    return root


def stored(index: ImageIndex) -> dict[str, str]:
    return index.hashes(index.ensure_active())


def test_incremental_reindex(stack: LocalStack, index: ImageIndex, client: GatewayClient, folder: Path) -> None:
    first = run_t2i(stack, "reindex", str(folder), "--full")
    assert first.returncode == 0, first.stderr
    assert "6 indexed" in first.stdout
    assert stored(index) == expected_rows(folder)
    hits = client.search_text("cat", top_k=10, filter=pb.Filter(labels=pb.LabelFilter(any_of=["animals"])))
    assert {h.id for h in hits.hits} == {"animals/chelsea.png", "animals/horse.png"}

    again = run_t2i(stack, "reindex", str(folder))
    assert again.returncode == 0 and "0 indexed, 6 unchanged, 0 deleted" in again.stdout

    shutil.copyfile(sample_photos(8)[7], folder / "things" / "coffee.png")  # changed content
    (folder / "things" / "rocket.jpg").unlink()  # deleted
    (folder / "things" / "empty.jpg").write_bytes(b"")
    (folder / "things" / "notes.png").write_text("not an image")
    (folder / "things" / "truncated.jpg").write_bytes((folder / "animals" / "horse.png").read_bytes()[:200])
    (folder / "things" / "bomb.png").write_bytes(png_bomb(30000, 30000))
    changed = run_t2i(stack, "reindex", str(folder))
    assert changed.returncode == 0, changed.stderr
    assert "1 indexed, 4 unchanged, 1 deleted, 4 skipped" in changed.stdout
    for name, reason in (("empty.jpg", "empty"), ("notes.png", "not a recognized image"), ("truncated.jpg", "corrupt or truncated"), ("bomb.png", "decompression bomb")):
        assert f"skipped things/{name}: " in changed.stdout and reason in changed.stdout
    assert stored(index) == expected_rows(folder)

    strict = run_t2i(stack, "reindex", str(folder), "--strict")
    assert strict.returncode == 1 and "4 skipped" in strict.stdout
    assert_serving(stack)


def test_full_reindex_swaps_alias_while_queries_keep_working(stack: LocalStack, index: ImageIndex, client: GatewayClient, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    synthetic_photos(folder, 60)
    assert run_t2i(stack, "reindex", str(folder), "--full").returncode == 0
    before = client.info()
    assert before.count == 60
    errors: list[str] = []
    answered = 0
    done = threading.Event()

    def query() -> None:
        nonlocal answered
        while not done.is_set():
            try:
                response = client.search_text("noise", top_k=5)
                assert len(response.hits) == 5
                answered += 1
            except (grpc.RpcError, AssertionError) as exc:
                errors.append(repr(exc))

    synthetic_photos(folder, 80, seed=1)  # 20 new files, 60 changed
    worker = threading.Thread(target=query)
    worker.start()
    try:
        rebuild = run_t2i(stack, "reindex", str(folder), "--full", "--batch-size", "8")
    finally:
        done.set()
        worker.join()
    assert rebuild.returncode == 0, rebuild.stderr
    assert errors == [] and answered > 0
    after = client.info()
    assert after.collection != before.collection and after.count == 80
    assert client.search_text("noise", top_k=5).collection == after.collection
    assert before.collection not in index.orphans() and not index.orphans()  # the old one is dropped
    assert stored(index) == expected_rows(folder)


def test_reading_a_dropped_collection_raises_collection_missing(index: ImageIndex) -> None:
    """The gateway's reads retry on exactly this error after a swap, so it must match Milvus's own text."""
    name = index.new_collection()
    index.drop(name)
    with pytest.raises(CollectionMissing):
        index.search(name, np.ones(index.stamp.dimension, dtype=np.float32), 3)
    with pytest.raises(CollectionMissing):
        index.vector_of(name, "any")


def test_killed_reindex_converges_on_rerun(stack: LocalStack, index: ImageIndex, tmp_path: Path) -> None:
    folder = tmp_path / "killed"
    synthetic_photos(folder, 240, seed=2)
    assert run_t2i(stack, "reindex", str(folder), "--full", "--no-progress").returncode == 0
    synthetic_photos(folder, 240, seed=3)  # every file changes
    for name in ("img_0000.jpg", "img_0002.jpg"):
        (folder / "even" / name).unlink()
    env = {**os.environ, **stack.env(), **GATEWAY_ENV}
    collection = index.ensure_active()
    old_hashes = index.hashes(collection)
    proc = subprocess.Popen([sys.executable, "-m", "t2i.cli", "reindex", str(folder), "--batch-size", "4", "--workers", "1"], env=env, cwd=PROJECT_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        first_ids = [image.id for image in scan_folder(folder)][:16]  # the job works in sorted order

        def some_rewritten() -> bool:
            current = index.hashes(collection, first_ids)
            return sum(1 for k, v in current.items() if old_hashes.get(k) != v) >= 4
        wait_for(some_rewritten, 120, "the reindex to rewrite some rows")
        os.killpg(proc.pid, signal.SIGKILL)  # killed mid-run, without warning
    finally:
        proc.wait(timeout=30)
    partial = index.hashes(collection)
    assert partial != expected_rows(folder)  # the kill left the index half-updated
    rerun = run_t2i(stack, "reindex", str(folder))
    assert rerun.returncode == 0, rerun.stderr
    assert stored(index) == expected_rows(folder)  # none lost, none duplicated, none stale
    assert index.count(collection) == len(expected_rows(folder)) == 238
