"""The reindex job: incremental, --full with queries during the rebuild, killed runs, failed reads, several sources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from core.index import ImageIndex
from core.milvus_errors import CollectionMissing
from devstack.stack import LocalStack
from export.samples import sample_photos
from reindex.sources import Source
from t2i.client import GatewayClient
from tests.support.faulty_fs import FAULTS_ENV, set_faults
from tests.support.images import png_bomb, synthetic_photos
from tests.support.polling import wait_for
from tests.support.reindex_jobs import expected_rows, run_killed_job
from tests.support.stack import GATEWAY_ENV, PROJECT_ROOT, assert_serving, run_t2i
from text2image.v1 import text2image_pb2 as pb


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
    assert again.returncode == 0 and "0 indexed, 6 unchanged, 0 rejected, 0 failed; 0 rows deleted" in again.stdout

    shutil.copyfile(sample_photos(8)[7], folder / "things" / "coffee.png")  # changed content
    (folder / "things" / "rocket.jpg").unlink()  # deleted
    (folder / "things" / "empty.jpg").write_bytes(b"")
    (folder / "things" / "notes.png").write_text("not an image")
    (folder / "things" / "truncated.jpg").write_bytes((folder / "animals" / "horse.png").read_bytes()[:200])
    (folder / "things" / "bomb.png").write_bytes(png_bomb(30000, 30000))
    changed = run_t2i(stack, "reindex", str(folder))
    assert changed.returncode == 0, changed.stderr
    assert "1 indexed, 4 unchanged, 4 rejected, 0 failed; 1 rows deleted" in changed.stdout
    for name, reason in (
        ("empty.jpg", "empty"),
        ("notes.png", "not a recognized image"),
        ("truncated.jpg", "corrupt or truncated"),
        ("bomb.png", "decompression bomb"),
    ):
        assert f"rejected things/{name}: " in changed.stdout and reason in changed.stdout
    assert stored(index) == expected_rows(folder)

    strict = run_t2i(stack, "reindex", str(folder), "--strict")
    assert strict.returncode == 1 and "4 rejected" in strict.stdout
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
    assert index.previous_collection() == before.collection and not index.orphans()  # the old one is kept for rollback
    assert stored(index) == expected_rows(folder)
    # Rollback swaps back, and again rolls forward.
    back = run_t2i(stack, "rollback")
    assert back.returncode == 0 and before.collection in back.stdout, back.stderr
    wait_for(lambda: client.search_text("noise", top_k=5).collection == before.collection, 10, "searches from the previous collection")
    assert client.info().count == 60
    assert run_t2i(stack, "rollback").returncode == 0
    assert client.info().collection == after.collection and index.previous_collection() == before.collection


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
    # The real job, SIGKILLed by itself right after its fourth batch of 4 is in Milvus: mid-run, without warning.
    run_killed_job([str(folder), "16"], env, tmp_path / "killed.log")
    partial = index.hashes(collection)
    rewritten = sum(1 for item_id, value in partial.items() if old_hashes.get(item_id) != value)
    assert 16 <= rewritten < 238  # the kill left the index half-updated
    rerun = run_t2i(stack, "reindex", str(folder))
    assert rerun.returncode == 0, rerun.stderr
    assert stored(index) == expected_rows(folder)  # none lost, none duplicated, none stale
    assert index.count(collection) == len(expected_rows(folder)) == 238


# ``t2i`` with the faulty filesystem of ``tests.support.faulty_fs`` registered (``faulty:///folder``).
FAULTY_T2I = "import runpy, sys, tests.support.faulty_fs; sys.argv = ['t2i', *sys.argv[1:]]; runpy.run_module('t2i.cli', run_name='__main__')"


def run_faulty_t2i(stack: LocalStack, faults: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env(), **GATEWAY_ENV, FAULTS_ENV: str(faults), "T2I_READ_RETRY_S": "0.5"}
    return subprocess.run([sys.executable, "-c", FAULTY_T2I, *args], env=env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)


def test_failed_reads_never_delete_rows(stack: LocalStack, index: ImageIndex, tmp_path: Path) -> None:
    """A mount whose reads fail with EIO for 10 of 30 files (listing works): rows kept, exit 3, a --full run swaps nothing."""
    folder, faults = tmp_path / "mount", tmp_path / "faults.txt"
    synthetic_photos(folder, 30, seed=4)
    faults.write_text("")
    assert run_faulty_t2i(stack, faults, "reindex", f"faulty://{folder}", "--full", "--no-progress").returncode == 0
    collection = index.active_collection()
    indexed = stored(index)
    assert indexed == expected_rows(folder)
    broken = sorted(indexed)[::3]
    set_faults(faults, {item_id: "eio" for item_id in broken})

    incremental = run_faulty_t2i(stack, faults, "reindex", f"faulty://{folder}", "--no-progress")
    assert incremental.returncode == 3, incremental.stdout + incremental.stderr
    assert "20 unchanged, 0 rejected, 10 failed; 0 rows deleted" in incremental.stdout
    assert all(f"failed {item_id}: could not read it: [Errno 5] Input/output error" in incremental.stdout for item_id in broken)
    assert stored(index) == indexed  # every row kept

    full = run_faulty_t2i(stack, faults, "reindex", f"faulty://{folder}", "--full", "--no-progress")
    assert full.returncode == 3 and "nothing swapped" in full.stdout, full.stdout + full.stderr
    assert index.active_collection() == collection and stored(index) == indexed

    set_faults(faults, {})
    rerun = run_faulty_t2i(stack, faults, "reindex", f"faulty://{folder}", "--no-progress")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert stored(index) == expected_rows(folder) and index.count(collection or "") == 30


def test_a_crashed_decode_worker_keeps_the_rows_of_the_files_it_held(stack: LocalStack, index: ImageIndex, tmp_path: Path) -> None:
    folder, faults = tmp_path / "crash", tmp_path / "faults.txt"
    synthetic_photos(folder, 12, seed=5)
    faults.write_text("")
    assert run_faulty_t2i(stack, faults, "reindex", f"faulty://{folder}", "--full", "--no-progress").returncode == 0
    before = stored(index)
    synthetic_photos(folder, 12, seed=6)  # every file changes, so every file goes to a decode worker
    set_faults(faults, {"odd/img_0005.jpg": "crash"})

    crashed = run_faulty_t2i(stack, faults, "reindex", f"faulty://{folder}", "--no-progress", "--workers", "1")
    assert crashed.returncode == 3, crashed.stdout + crashed.stderr
    assert "failed odd/img_0005.jpg: processing failed: BrokenProcessPool" in crashed.stdout
    assert "11 indexed, 0 unchanged, 0 rejected, 1 failed; 0 rows deleted" in crashed.stdout  # only the file that kills a worker
    after = stored(index)
    assert set(after) == set(before)  # nothing deleted
    assert after["odd/img_0005.jpg"] == before["odd/img_0005.jpg"]  # its old row, kept
    set_faults(faults, {})
    assert run_faulty_t2i(stack, faults, "reindex", f"faulty://{folder}", "--no-progress").returncode == 0
    assert stored(index) == expected_rows(folder)
    assert_serving(stack)


def test_a_second_folder_does_not_delete_the_first(stack: LocalStack, index: ImageIndex, client: GatewayClient, tmp_path: Path) -> None:
    photos, more = tmp_path / "photos", tmp_path / "more"
    synthetic_photos(photos, 8, seed=7)
    synthetic_photos(more / "extra", 4, seed=8)
    assert run_t2i(stack, "reindex", str(photos), "--full").returncode == 0
    second = run_t2i(stack, "reindex", str(more))
    assert second.returncode == 0 and "0 rows deleted" in second.stdout, second.stdout + second.stderr
    assert stored(index) == {**expected_rows(photos), **expected_rows(more)}
    assert client.info().count == 12

    copy = tmp_path / "copy"
    synthetic_photos(copy, 2, seed=9)  # even/img_0000.jpg and odd/img_0001.jpg: ids that photos' rows hold
    clash = run_t2i(stack, "reindex", str(copy))
    assert clash.returncode == 0 and "0 indexed, 0 unchanged, 2 rejected" in clash.stdout, clash.stdout
    assert f"rejected even/img_0000.jpg: the id is taken by a row of {Source(str(photos)).key}" in clash.stdout
    assert stored(index) == {**expected_rows(photos), **expected_rows(more)}  # not overwritten
    prefixed = run_t2i(stack, "reindex", str(copy), "--id-prefix", "copy/")
    assert prefixed.returncode == 0 and "2 indexed" in prefixed.stdout and client.info().count == 14
    mirror = run_t2i(stack, "reindex", str(more), "--mirror")
    assert mirror.returncode == 0 and "10 rows deleted" in mirror.stdout, mirror.stdout
    assert stored(index) == expected_rows(more)

    rebuilt = run_t2i(stack, "reindex", str(photos), str(more), "--full")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert stored(index) == {**expected_rows(photos), **expected_rows(more)}


def test_row_schemas_on_the_real_milvus(stack: LocalStack, index: ImageIndex) -> None:
    """Schema 2 collections record sources; a schema-1 collection (made as the old code made it) serves, takes writes, and is copied from."""
    from pymilvus import DataType, MilvusClient

    from core.filters import literal
    from core.records import SCHEMA_VERSION, make_row

    vector = np.ones(index.stamp.dimension, dtype=np.float32)
    old = f"{stack.alias}_schema1"
    client = MilvusClient(uri=stack.milvus_uri, token=stack.milvus_token)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False, description=index.stamp.describe(1).replace(', "schema_version": 1', ""))
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=index.stamp.dimension)
    schema.add_field("uri", DataType.VARCHAR, max_length=2048)
    schema.add_field("labels", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=32, max_length=128)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
    params = client.prepare_index_params()
    params.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 64})
    client.create_collection(old, schema=schema, index_params=params, consistency_level="Session")
    client.load_collection(old)
    new = index.new_collection()
    try:
        assert index.schema_version(old) == 1 and index.schema_version(new) == SCHEMA_VERSION
        index.upsert(old, [make_row("legacy.png", vector, "/x/legacy.png", ["x"], "h1", source="/x")])  # "source" left out for schema 1
        assert index.stored(old) == {"legacy.png": ("h1", "")}
        index.upsert(new, [make_row("fresh.png", vector, "/y/fresh.png", [], "h2", source="/y")])
        assert index.copy_rows(old, new, ["legacy.png", "absent.png"], {"legacy.png": "/x"}) == ["legacy.png"]
        assert index.stored(new) == {"fresh.png": ("h2", "/y"), "legacy.png": ("h1", "/x")}
        assert index.count(new, expression=f"source in [{literal('/x')}]") == 1
        assert index.count(new) == 2
        assert [hit.id for hit in index.search(old, vector, 1)] == ["legacy.png"]  # an old collection keeps serving
    finally:
        client.drop_collection(old)
        index.drop(new)
        client.close()
