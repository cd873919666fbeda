"""The batch reindex job: a folder or S3 prefix of images in (``reindex.sources``), vectors in Milvus out.

Incremental by default: files whose content hash (bytes, uri and labels) matches the stored row
are skipped, changed ones re-encoded, and rows whose file is gone (or no longer decodes) deleted.
``full`` builds a new collection and swaps the alias at the end, so queries keep using the old one
meanwhile; the replaced collection is kept behind ``<alias>_previous`` for rollback. Every write
is an upsert keyed by id and deletions come last, so a run killed at any moment and run again
ends with exactly the right rows. Decoding runs in a process pool while Triton encodes the
previous batch.

Sharded runs (a Kubernetes Indexed Job): each of N processes takes the files whose id hashes to
its shard, and only ever deletes rows of its shard. With a run id, all shards fill the one
collection ``<alias>_run_<id>``, and ``finalize`` verifies it against the listing and promotes it;
without one, each shard updates the active collection incrementally (the CronJob).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from core.errors import InvalidArgument
from core.index import ImageIndex
from core.lifetime import die_with_parent
from core.records import item_hash, make_row
from inference.images import ImageLimits, PreprocessConfig, load_crop, normalize
from inference.triton_client import TritonEncoder
from reindex.sources import ImageFile, Shard, Source

logger = logging.getLogger(__name__)


@dataclass
class ReindexReport:
    """What one run did."""

    collection: str = ""
    full: bool = False
    scanned: int = 0
    indexed: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    pipeline_seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Indexed images per second of wall time (the whole job: collection, hashing, sealing included)."""
        return self.indexed / self.seconds if self.seconds else 0.0

    @property
    def pipeline_images_per_second(self) -> float:
        """Indexed images per second of the decode, encode and insert pipeline alone."""
        return self.indexed / self.pipeline_seconds if self.pipeline_seconds else 0.0

    def summary(self) -> str:
        """One line for people."""
        mode = "full rebuild" if self.full else "incremental"
        return (
            f"{mode} into {self.collection}: {self.scanned} files, {self.indexed} indexed, {self.unchanged} unchanged, "
            f"{self.deleted} deleted, {len(self.skipped)} skipped in {self.seconds:.1f} s ({self.images_per_second:.1f} img/s; "
            f"{self.pipeline_images_per_second:.1f} img/s while decoding, encoding and inserting)"
        )


def _ready() -> bool:
    """Worker: nothing; submitted first so the pool's processes start (and import) early."""
    return True


def _load(source: Source, image: ImageFile, config: PreprocessConfig, limits: ImageLimits) -> np.ndarray:
    """Worker: read, decode, resize and crop one file (runs in the process pool).

    It returns the uint8 crop, a quarter of the bytes of the float32 pixels: the pipe back from
    the pool cost more than the decoding (docs/benchmarks.md, the GPU section).
    """
    return load_crop(source.read(image, limits.max_bytes), config, limits)


def _batches(items: list[ImageFile], size: int) -> Iterator[list[ImageFile]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Reindexer:
    """Runs reindex passes with one encoder and one index."""

    def __init__(
        self,
        encoder: TritonEncoder,
        index: ImageIndex,
        limits: ImageLimits = ImageLimits(),
        batch_size: int = 32,
        workers: int = 2,
        in_flight: int = 2,
        on_batch: Callable[[ReindexReport], None] | None = None,
        keep_previous: bool = True,
    ):
        """Set up the job.

        Args:
            encoder: Triton encoder (its preprocessing config decides the crops).
            index: The Milvus index to fill.
            limits: What a file may be.
            batch_size: Images per Triton request.
            workers: Decoding processes.
            in_flight: Batches sent to Triton before waiting for the oldest (1: one at a time).
            on_batch: Called after each batch's rows are in Milvus, with the report so far.
            keep_previous: A full rebuild keeps the collection it replaces for rollback (else drops it).
        """
        self.keep_previous = keep_previous
        self.on_batch = on_batch
        self.encoder = encoder
        self.in_flight = max(1, in_flight)
        self.index = index
        self.limits = limits
        self.batch_size = batch_size
        self.workers = workers

    async def run(self, source: Source, full: bool = False, progress: bool = True, shard: Shard = Shard(), run_id: str | None = None) -> ReindexReport:
        """Index ``shard`` of ``source`` (all of it by default); see the module docstring for the guarantees.

        ``run_id`` makes this one shard of a sharded full rebuild: it fills the run's collection
        and leaves the alias alone (``finalize`` promotes it).
        """
        start = time.perf_counter()
        report = ReindexReport(full=full or run_id is not None)
        files = [f for f in await asyncio.to_thread(source.list) if shard.owns(f.id)]
        # Spawned decode processes take about a second to start: start them now, not at the first batch.
        # The workers die with this process, even when it is SIGKILLed (core.lifetime).
        pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent, initargs=(signal.SIGKILL, os.getpid())
        )
        try:
            for _ in range(self.workers):
                pool.submit(_ready)
            return await self._run(source, files, full, shard, run_id, progress, report, pool, start)
        finally:
            pool.shutdown(cancel_futures=True)

    async def _run(
        self,
        source: Source,
        files: list[ImageFile],
        full: bool,
        shard: Shard,
        run_id: str | None,
        progress: bool,
        report: ReindexReport,
        pool: ProcessPoolExecutor,
        start: float,
    ) -> ReindexReport:
        report.scanned = len(files)
        creating: asyncio.Task[str] | None = None
        stored: dict[str, str] = {}
        if run_id is not None:
            # A shard of a sharded rebuild: resume into the run's collection (a killed shard rerun skips what it wrote).
            report.collection = await asyncio.to_thread(self.index.run_collection, run_id)
            stored = await asyncio.to_thread(self.index.hashes, report.collection)
            full = False
        elif full:
            for orphan in await asyncio.to_thread(self.index.orphans):
                await asyncio.to_thread(self.index.drop, orphan)
            # Creating and loading a collection takes seconds: overlap it with hashing and the first decodes.
            creating = asyncio.create_task(asyncio.to_thread(self.index.new_collection))
        else:
            report.collection = await asyncio.to_thread(self.index.ensure_active)
            stored = await asyncio.to_thread(self.index.hashes, report.collection)
        stored = {item_id: digest for item_id, digest in stored.items() if shard.owns(item_id)}  # other shards' rows are theirs
        hashes: dict[str, str] = {}
        for image in files:
            try:
                hashes[image.id] = item_hash(await asyncio.to_thread(source.read, image, self.limits.max_bytes), image.uri, image.labels)
            except (OSError, InvalidArgument) as exc:
                report.skipped.append((image.id, str(exc)))
        todo = [f for f in files if f.id in hashes and stored.get(f.id) != hashes[f.id]]
        report.unchanged = sum(1 for f in files if f.id in hashes and stored.get(f.id) == hashes[f.id])
        pipeline_start = time.perf_counter()
        await self._index(source, todo, hashes, report, progress, creating, pool)
        report.pipeline_seconds = time.perf_counter() - pipeline_start
        if creating is not None and not report.collection:
            report.collection = await creating
        usable = {f.id for f in files} - {item_id for item_id, _ in report.skipped}
        stale = [item_id for item_id in stored if item_id not in usable]  # gone, or now unreadable
        if stale:
            report.deleted = await asyncio.to_thread(self.index.delete, report.collection, stale)
        if report.indexed or report.deleted:
            await asyncio.to_thread(self.index.seal, report.collection)  # serve the new rows from HNSW
        if shard.count == 1 and run_id is None:
            await self._verify(report, usable)
        if full:
            await asyncio.to_thread(self.index.promote, report.collection, self.keep_previous)
        report.seconds = time.perf_counter() - start
        return report

    async def _verify(self, report: ReindexReport, expected: set[str], attempts: int = 4) -> None:
        """Make sure the collection holds exactly ``expected``, deleting again what should be gone.

        A count is cheap; only when it disagrees with the listing is the collection rescanned.
        After a Milvus restart, a killed run's rerun has found (rarely: about one rerun in 26 of the
        chaos campaign) a deleted file's row back, or a count that still included a deleted row
        for a moment. Milvus 2.3 has known ways to lose or delay a delete: rows of removed files are
        deleted again, and a count that disagrees with no extra row is given a few seconds.
        """
        for attempt in range(attempts):
            count = await asyncio.to_thread(self.index.count, report.collection)
            if count == len(expected):
                return
            stored = await asyncio.to_thread(self.index.hashes, report.collection)
            extra = sorted(set(stored) - expected)
            if extra:
                logger.warning("%s still holds %d rows of files that are gone (%s): deleting them again", report.collection, len(extra), ", ".join(extra[:3]))
                report.deleted += await asyncio.to_thread(self.index.delete, report.collection, extra)
                await asyncio.to_thread(self.index.seal, report.collection)
            else:
                await asyncio.sleep(0.5 * 2**attempt)  # the count lags a delete: give it time
        logger.warning("%s counts %d rows where the source has %d usable files; rerun the reindex if it stays so", report.collection, count, len(expected))

    async def _index(
        self,
        source: Source,
        todo: list[ImageFile],
        hashes: dict[str, str],
        report: ReindexReport,
        progress: bool,
        creating: asyncio.Task[str] | None,
        pool: ProcessPoolExecutor,
    ) -> None:
        if not todo:
            return
        loop = asyncio.get_running_loop()
        config = self.encoder.preprocess_config
        bar = tqdm(total=len(todo), unit="img", desc="indexing", disable=not progress, dynamic_ncols=True)
        in_flight: deque[asyncio.Task[None]] = deque()
        try:

            def submit(batch: list[ImageFile]) -> list[tuple[ImageFile, Future[np.ndarray]]]:
                return [(f, pool.submit(_load, source, f, config, self.limits)) for f in batch]

            batches = list(_batches(todo, self.batch_size))
            decoding = deque(submit(batch) for batch in batches[: self.in_flight])  # decode ahead of the encoder
            queued = iter(batches[self.in_flight :])
            while decoding:
                pending = decoding.popleft()
                if upcoming := next(queued, None):
                    decoding.append(submit(upcoming))
                crops, good = [], []
                for image, future in pending:
                    try:
                        crops.append(await asyncio.wrap_future(future, loop=loop))
                        good.append(image)
                    except InvalidArgument as exc:
                        report.skipped.append((image.id, str(exc)))
                    except Exception as exc:  # noqa: BLE001 - a worker failure skips that file only
                        report.skipped.append((image.id, f"could not read: {exc}"))
                if good:
                    # Several batches in flight keep Triton busy while the last one's rows are inserted.
                    pixels = normalize(np.stack(crops), config)
                    in_flight.append(asyncio.create_task(self._encode_and_insert(good, pixels, hashes, report, creating)))
                    if len(in_flight) >= self.in_flight:
                        await in_flight.popleft()
                bar.update(len(pending))
            while in_flight:
                await in_flight.popleft()
        finally:
            for task in in_flight:
                task.cancel()
            bar.close()

    async def _encode_and_insert(
        self,
        images: list[ImageFile],
        pixels: np.ndarray,
        hashes: dict[str, str],
        report: ReindexReport,
        creating: asyncio.Task[str] | None,
    ) -> None:
        vectors = await self.encoder.encode_pixels(pixels)
        rows = [make_row(f.id, v, f.uri, f.labels, hashes[f.id]) for f, v in zip(images, vectors, strict=True)]
        if not report.collection and creating is not None:
            report.collection = await creating
        await asyncio.to_thread(self.index.upsert, report.collection, rows)
        report.indexed += len(images)
        if self.on_batch is not None:
            self.on_batch(report)
