"""Reindex sources and shards: ids, labels and uris from a folder, and a stable, complete split."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InvalidArgument
from reindex.sources import Shard, Source, shard_of


def test_a_folder_lists_images_by_relative_id_with_folder_labels(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.JPG").write_bytes(b"1")
    (tmp_path / "y.png").write_bytes(b"22")
    (tmp_path / "notes.txt").write_text("not an image")
    files = Source(str(tmp_path)).list()
    assert [(f.id, f.labels, f.size) for f in files] == [("a/b/x.JPG", ("a", "b"), 1), ("y.png", (), 2)]
    assert files[0].uri == str((tmp_path / "a" / "b" / "x.JPG").resolve())
    assert Source(f"file://{tmp_path}").list() == files  # the same code for a file:// url


def test_reading_enforces_the_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(b"x" * 2048)
    source = Source(str(tmp_path))
    [image] = source.list()
    assert source.read(image, 4096) == b"x" * 2048
    with pytest.raises(InvalidArgument, match="MiB"):
        source.read(image, 1024)


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="is not a folder"):
        Source(str(tmp_path / "nope")).list()


def test_shards_split_every_id_exactly_once_and_stably() -> None:
    ids = [f"photos/{i:05d}.jpg" for i in range(3000)]
    owners = [[s for s in range(4) if Shard(s, 4).owns(item_id)] for item_id in ids]
    assert all(len(owner) == 1 for owner in owners)
    sizes = [sum(1 for owner in owners if owner == [s]) for s in range(4)]
    assert min(sizes) > 600  # a hash, not a range: balanced without knowing the listing
    # Stable across processes, machines and versions (an Indexed Job's pods must agree): pinned values of SHA-256.
    assert shard_of("photos/00001.jpg", 4) == 2 == owners[1][0]
    assert shard_of("a.png", 3) == 2
    assert all(Shard().owns(item_id) for item_id in ids[:10])


def test_the_shard_index_comes_from_the_indexed_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    assert Shard.from_env(3) == Shard(2, 3)
    assert Shard.from_env(3, index=0) == Shard(0, 3)
    with pytest.raises(InvalidArgument, match=r"in 0\.\.1"):
        Shard.from_env(2)
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    with pytest.raises(InvalidArgument, match="JOB_COMPLETION_INDEX"):
        Shard.from_env(2)
    assert Shard.from_env(1) == Shard(0, 1)
