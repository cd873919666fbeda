"""The reindex job never deletes what it could not read, and deletes only its own sources' rows.

The faults are real: ``tests.support.faulty_fs`` is the local filesystem through fsspec, failing chosen
files with EIO, removing them between the listing and the read, or killing the decode worker
that reads them. Triton and Milvus are the stand-ins of ``tests.unit.fake_reindex``; the same
faults run against the real servers in ``tests/integration/test_reindex.py``.
"""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFile

from core.errors import FailedPrecondition, InvalidArgument, Unavailable
from core.records import SCHEMA_VERSION, ModelStamp, item_hash
from inference.images import DecoderFailure, decode_image
from reindex.job import MAX_READ_FAILURES_IN_A_ROW, Reindexer
from reindex.report import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_UNSETTLED, ReindexReport
from reindex.sources import Source
from tests.support.faulty_fs import FAULTS_ENV, set_faults
from tests.unit.fake_reindex import FakeEncoder, MemoryIndex

NAMES = ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"]


@pytest.fixture()
def faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The faults file the faulty filesystem reads (empty: every read works)."""
    path = tmp_path / "faults.txt"
    path.write_text("")
    monkeypatch.setenv(FAULTS_ENV, str(path))
    return path


def make_folder(folder: Path, names: list[str], colour: tuple[int, int, int] = (200, 10, 10)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (32, 32), colour).save(folder / name)
    return folder


def faulty(folder: Path, retry_s: float = 0.0, id_prefix: str = "") -> Source:
    return Source(f"faulty://{folder}", retry_s=retry_s, id_prefix=id_prefix)


def run(index: MemoryIndex, sources: Source | list[Source], **kwargs: Any) -> ReindexReport:
    job = Reindexer(FakeEncoder(), index, workers=1, batch_size=2)
    return asyncio.run(job.run(sources, progress=False, **kwargs))


def indexed(folder: Path) -> tuple[MemoryIndex, dict[str, tuple[str, str]]]:
    """An index that holds ``folder`` (read through the faulty filesystem, no faults yet), and its rows."""
    index = MemoryIndex()
    run(index, faulty(folder))
    return index, dict(index.rows)


def listing_rows(source: Source) -> dict[str, tuple[str, str]]:
    """What the collection must hold for ``source`` alone: every listed file, at its current bytes."""
    return {f.id: (item_hash(source.read(f, 2**30), f.uri, f.labels, f.modified_time), source.key) for f in source.list()}


def test_failed_reads_keep_their_rows_and_a_rerun_converges(tmp_path: Path, faults: Path) -> None:
    folder = make_folder(tmp_path / "photos", NAMES)
    index = MemoryIndex()
    assert run(index, faulty(folder)).exit_code() == EXIT_OK
    before = dict(index.rows)
    make_folder(folder, ["a.png"], colour=(10, 200, 10))  # a changed file that then cannot be read
    set_faults(faults, {"a.png": "eio", "b.png": "eio", "c.png": "eio"})

    report = run(index, faulty(folder))

    assert index.rows == before  # nothing deleted, a.png's old row kept
    assert sorted(item_id for item_id, _ in report.failed) == ["a.png", "b.png", "c.png"]
    assert all("Input/output error" in reason for _, reason in report.failed)
    assert (report.deleted, report.indexed, report.unchanged) == (0, 0, 3)
    assert report.exit_code() == EXIT_FAILED
    assert "3 failed; 0 rows deleted" in report.summary()
    assert any("a rerun picks them up" in line for line in report.details())

    set_faults(faults, {})
    rerun = run(index, faulty(folder))
    assert rerun.exit_code() == EXIT_OK and rerun.indexed == 1 and rerun.unchanged == 5
    assert index.rows == listing_rows(faulty(folder))  # exactly the listing, a.png at its new bytes


def test_reads_are_retried_within_the_budget(tmp_path: Path, faults: Path) -> None:
    folder = make_folder(tmp_path / "photos", NAMES[:2])
    set_faults(faults, {"a.png": "flaky"})
    without = run(MemoryIndex(), faulty(folder, retry_s=0.0))
    assert [item_id for item_id, _ in without.failed] == ["a.png"]

    (tmp_path / "faults.txt.opened").unlink()
    index = MemoryIndex()
    report = run(index, faulty(folder, retry_s=5.0))
    assert report.failed == [] and report.indexed == 2
    assert set(index.rows) == {"a.png", "b.png"}


def test_a_full_rebuild_with_failed_reads_swaps_nothing(tmp_path: Path, faults: Path) -> None:
    folder = make_folder(tmp_path / "photos", NAMES)
    index, before = indexed(folder)
    set_faults(faults, {"b.png": "eio"})

    report = run(index, faulty(folder), full=True)

    assert index.alias == "c0" and index.promoted == [] and index.rows == before
    assert report.exit_code() == EXIT_FAILED and not report.promoted
    assert any(line.startswith("nothing swapped") for line in report.details())


def test_a_full_rebuild_allowed_some_failures_carries_their_rows(tmp_path: Path, faults: Path) -> None:
    folder = make_folder(tmp_path / "photos", NAMES)
    index, before = indexed(folder)
    set_faults(faults, {"b.png": "eio"})

    report = run(index, faulty(folder), full=True, max_failed=1)

    assert report.promoted and index.alias != "c0" and report.carried == 1
    assert index.rows == before  # b.png's row came over from the replaced collection
    assert report.exit_code() == EXIT_OK


def test_a_crashed_decode_worker_fails_its_files_and_keeps_their_rows(tmp_path: Path, faults: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = make_folder(tmp_path / "photos", NAMES)
    index, before = indexed(folder)
    make_folder(folder, NAMES, colour=(10, 10, 200))  # every file changed: all go to the workers
    set_faults(faults, {"c.png": "crash"})

    with caplog.at_level(logging.ERROR, logger="reindex.job"):
        report = run(index, faulty(folder))

    assert [item_id for item_id, _ in report.failed] == ["c.png"]  # only the file that kills a worker every time
    assert report.rejected == [] and report.deleted == 0 and report.indexed == 5
    assert index.rows["c.png"] == before["c.png"]  # its old row, kept
    assert index.rows == {**listing_rows(Source(str(folder))), "c.png": before["c.png"]}
    assert report.exit_code() == EXIT_FAILED
    assert "BrokenProcessPool" in caplog.text  # logged with its traceback
    assert "the decode worker died reading" in caplog.text


def test_a_file_gone_since_the_listing_loses_its_row(tmp_path: Path, faults: Path) -> None:
    folder = make_folder(tmp_path / "photos", NAMES[:3])
    index = MemoryIndex()
    run(index, faulty(folder))
    set_faults(faults, {"b.png": "vanish"})

    report = run(index, faulty(folder))

    assert report.gone == ["b.png"] and report.deleted == 1 and report.failed == []
    assert set(index.rows) == {"a.png", "c.png"}
    assert report.exit_code() == EXIT_OK


def test_a_source_whose_folder_vanished_is_not_taken_for_removed_files(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "photos", NAMES[:1])
    source = Source(str(folder))
    (image,) = source.list()
    (folder / "a.png").unlink()
    assert source.is_gone(image)
    folder.rmdir()  # an unmounted share: the file is not "gone", the folder is
    assert not source.is_gone(image)


def test_rejected_bytes_lose_their_row(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "photos", NAMES[:3])
    index = MemoryIndex()
    run(index, Source(str(folder)))
    (folder / "b.png").write_bytes(b"not an image")

    report = run(index, Source(str(folder)))

    assert [item_id for item_id, _ in report.rejected] == ["b.png"] and report.deleted == 1
    assert set(index.rows) == {"a.png", "c.png"}
    assert report.exit_code() == EXIT_OK and report.exit_code(strict=True) == EXIT_REJECTED


class _BrokenDecoder(ImageFile.ImageFile):
    """A Pillow plugin whose decoder raises what no bad file makes Pillow raise: a decoder bug."""

    format = "PNG"

    def _open(self) -> None:
        self._size = (32, 32)
        self._mode = "RGB"

    def load(self) -> Any:
        raise RuntimeError("decoder bug")


def test_an_unexpected_decoder_exception_is_a_decoder_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every plugin is registered first: registered during the test, they would go into the patched ID list and
    # be lost when it is restored (Pillow initializes once), and later tests could open no PNG or JPEG.
    Image.init()
    monkeypatch.setitem(Image.OPEN, "BROKEN", (_BrokenDecoder, lambda prefix: prefix.startswith(b"BROKEN")))
    monkeypatch.setattr(Image, "ID", ["BROKEN", *Image.ID])
    with pytest.raises(DecoderFailure, match=r"failed unexpectedly \(RuntimeError: decoder bug\)"):
        decode_image(b"BROKEN" + bytes(64))
    truncated = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(truncated, format="PNG")
    with pytest.raises(InvalidArgument, match="corrupt or truncated") as bad:
        decode_image(truncated.getvalue()[:-40])
    assert not isinstance(bad.value, DecoderFailure)  # bad bytes stay a plain rejection


def test_a_second_folder_keeps_the_first_folders_rows(tmp_path: Path) -> None:
    photos = make_folder(tmp_path / "photos", NAMES[:4])
    more = make_folder(tmp_path / "more", ["x.png", "y.png"])
    index = MemoryIndex()
    run(index, Source(str(photos)))

    report = run(index, Source(str(more)))

    assert report.deleted == 0
    assert index.rows == {**listing_rows(Source(str(photos))), **listing_rows(Source(str(more)))}
    (photos / "a.png").unlink()
    run(index, Source(str(photos)))  # removing a file of one folder deletes only that row
    assert set(index.rows) == {"b.png", "c.png", "d.png", "x.png", "y.png"}


def test_an_id_of_another_source_is_rejected_not_overwritten_and_a_prefix_separates_them(tmp_path: Path) -> None:
    photos = make_folder(tmp_path / "photos", NAMES[:2])
    more = make_folder(tmp_path / "more", ["a.png"], colour=(0, 0, 255))
    index = MemoryIndex()
    run(index, Source(str(photos)))
    before = dict(index.rows)

    clash = run(index, Source(str(more)))
    assert index.rows == before
    assert clash.conflicts == [("a.png", f"the id is taken by a row of {Source(str(photos)).key}; index {more} with --id-prefix, or delete that row")]

    run(index, Source(str(more), id_prefix="more/"))
    assert set(index.rows) == {"a.png", "b.png", "more/a.png"}


def test_mirror_deletes_every_row_the_source_does_not_list(tmp_path: Path) -> None:
    photos = make_folder(tmp_path / "photos", NAMES[:2])
    index = MemoryIndex({"api-row": ("h", "")})
    run(index, Source(str(photos)))
    assert set(index.rows) == {"a.png", "b.png", "api-row"}  # a row written through UpsertImages stays
    report = run(index, Source(str(photos)), mirror=True)
    assert set(index.rows) == {"a.png", "b.png"} and report.deleted == 1


def test_a_schema_1_collection_is_served_but_not_pruned_and_full_moves_it(tmp_path: Path) -> None:
    photos = make_folder(tmp_path / "photos", NAMES[:2])
    index = MemoryIndex({"old.png": ("h", "")}, schema=1)
    report = run(index, Source(str(photos)))
    assert set(index.rows) == {"a.png", "b.png", "old.png"}  # nothing deleted: rows do not say where they came from
    assert any("predates row schema 2" in note and "--full" in note for note in report.notes)

    full = run(index, Source(str(photos)), full=True)
    assert full.promoted and index.schemas[index.alias or ""] == SCHEMA_VERSION
    assert set(index.rows) == {"a.png", "b.png"}
    assert any("does not hold 1 rows" in note and "no recorded source" in note for note in full.notes)


def test_a_full_rebuild_of_two_sources_says_which_rows_it_leaves_behind(tmp_path: Path) -> None:
    photos = make_folder(tmp_path / "photos", NAMES[:2])
    more = make_folder(tmp_path / "more", ["x.png"])
    other = make_folder(tmp_path / "other", ["z.png"])
    index = MemoryIndex()
    for folder in (photos, more, other):
        run(index, Source(str(folder)))

    report = run(index, [Source(str(photos)), Source(str(more))], full=True)

    assert set(index.rows) == {"a.png", "b.png", "x.png"}
    assert report.notes == [f"the new collection does not hold 1 rows of c0 from {Source(str(other)).key}: this run was not given that source"]


class NeverSettles(MemoryIndex):
    """A count that never agrees with the rows (Milvus losing track)."""

    def count(self, collection: str, *, expression: str = "") -> int:
        return super().count(collection, expression=expression) + 1


def test_a_count_that_never_agrees_fails_the_run_and_a_full_one_swaps_nothing(tmp_path: Path) -> None:
    photos = make_folder(tmp_path / "photos", NAMES[:2])
    index = NeverSettles()
    report = run(index, Source(str(photos)))
    assert report.exit_code() == EXIT_UNSETTLED and "rerun the reindex" in report.unsettled[0]
    full = run(index, Source(str(photos)), full=True)
    assert full.exit_code() == EXIT_UNSETTLED and not full.promoted and index.alias == "c0"


class SealFails(MemoryIndex):
    def seal(self, collection: str) -> bool:
        return False


def test_a_seal_that_fails_fails_the_run(tmp_path: Path) -> None:
    index = SealFails()
    report = run(index, Source(str(make_folder(tmp_path / "photos", NAMES[:2]))), full=True)
    assert report.exit_code() == EXIT_UNSETTLED and not report.promoted and index.promoted == []


def test_an_id_listed_by_two_sources_of_one_run_keeps_the_first_ones_row(tmp_path: Path) -> None:
    photos = make_folder(tmp_path / "photos", NAMES[:2])
    more = make_folder(tmp_path / "more", ["a.png"], colour=(0, 0, 255))
    index = MemoryIndex()
    run(index, Source(str(photos)))
    before = dict(index.rows)

    both = run(index, [Source(str(photos)), Source(str(more))])
    assert index.rows == before and both.deleted == 0
    assert both.conflicts == [("a.png", f"{more} lists the same id as {photos}; give one of them --id-prefix")]
    assert "1 rejected" in both.summary() and both.exit_code(strict=True) == EXIT_REJECTED

    full = run(index, [Source(str(photos)), Source(str(more))], full=True)
    assert full.promoted and index.rows == before  # the new collection holds photos' a.png


def test_a_source_that_lists_nothing_but_has_rows_is_refused(tmp_path: Path) -> None:
    photos = make_folder(tmp_path / "photos", NAMES[:3])
    index = MemoryIndex()
    run(index, Source(str(photos)))
    before = dict(index.rows)
    for name in NAMES[:3]:
        (photos / name).unlink()  # an unmounted share: the mount point is there, and empty

    with pytest.raises(FailedPrecondition, match="lists no image files, but the index holds 3 rows from it: is it mounted"):
        run(index, Source(str(photos)))
    with pytest.raises(FailedPrecondition, match="holds 3 rows"):
        run(index, Source(str(photos)), full=True)
    assert index.rows == before and index.promoted == []

    allowed = run(index, Source(str(photos)), allow_empty=True)
    assert allowed.deleted == 3 and index.rows == {}


def test_a_source_whose_every_read_fails_stops_the_run_before_deleting(tmp_path: Path, faults: Path) -> None:
    names = [f"{i:02d}.png" for i in range(MAX_READ_FAILURES_IN_A_ROW + 5)]
    folder = make_folder(tmp_path / "photos", names)
    index, before = indexed(folder)
    set_faults(faults, dict.fromkeys(names, "eio"))
    with pytest.raises(Unavailable, match=f"the last {MAX_READ_FAILURES_IN_A_ROW} reads from .* all failed .*nothing was deleted"):
        run(index, faulty(folder))
    assert index.rows == before


class OtherModel(MemoryIndex):
    """The active collection holds another model's vectors (a rebuild for a new model)."""

    def stamp_of(self, collection: str) -> ModelStamp:
        return ModelStamp("old/clip", "1" * 64, 4) if collection == "c0" else self.stamp


def test_max_failed_does_not_swap_when_the_failed_rows_cannot_be_carried(tmp_path: Path, faults: Path) -> None:
    folder = make_folder(tmp_path / "photos", NAMES[:3])
    index = OtherModel()
    run(index, faulty(folder))
    set_faults(faults, {"b.png": "eio"})
    report = run(index, faulty(folder), full=True, max_failed=1)
    assert not report.promoted and index.alias == "c0" and report.exit_code() == EXIT_FAILED
    assert any("cannot be carried over" in note for note in report.notes)


def test_the_summary_splits_the_run_into_listing_pipeline_and_finishing(tmp_path: Path) -> None:
    report = ReindexReport(full=False, collection="C", indexed=20, scanned=20, seconds=10.0, listing_seconds=1.5, pipeline_seconds=6.0)
    assert report.finishing_seconds == 2.5
    assert report.summary().endswith("listing and hashing 1.5 s, pipeline 6.0 s, deletes, sealing and checks 2.5 s")
    # A real run measures each part: none is left at 0 and together they are the run.
    ran = run(MemoryIndex(), faulty(make_folder(tmp_path / "photos", NAMES)))
    assert ran.indexed == len(NAMES) and min(ran.listing_seconds, ran.pipeline_seconds, ran.finishing_seconds) > 0
    assert abs(ran.listing_seconds + ran.pipeline_seconds + ran.finishing_seconds - ran.seconds) < 1e-9
