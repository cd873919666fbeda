"""The batch reindex job: folders or S3 prefixes of images in (``reindex.sources``), vectors in Milvus out.

Incremental by default: files whose content hash (bytes, uri, labels and, in a collection of
schema 3, the modification time) matches the stored row are skipped, changed ones re-encoded, and
rows of this run's sources whose file is removed, gone or rejected are deleted. Rows of schema 3
hold the typed metadata (``core.records.ImageMetadata``): width, height and format from the
decode the workers make anyway, bytes as read, the listing's modification time, the EXIF capture
time. Each file ends as one outcome of ``reindex.report``: a file that could not
be read (an I/O or network error after the retries, a worker crash) is *failed*, and its row is
kept, never deleted. Rows record the source they came from (schema 2), so a run deletes only rows
of its own sources; ``mirror`` deletes every row its sources do not list (the old behaviour, for a
collection that mirrors one bucket). ``full`` builds a new collection from the sources it is
given and swaps the alias at the end, so queries keep using the old one meanwhile; the replaced
collection is kept behind ``<alias>_previous`` for rollback. A full run with failed files (more
than ``max_failed``), or one that Milvus did not confirm, swaps nothing. Every write is an upsert
keyed by id and deletions come last, so a run killed at any moment and run again ends with exactly
the right rows. Decoding runs in a process pool while Triton encodes the previous batch.

Sharded runs (a Kubernetes Indexed Job): each of N processes takes the files whose id hashes to
its shard, and only ever deletes rows of its shard. With a run id, all shards fill the one
collection ``<alias>_run_<id>``, and ``finalize`` verifies it against the listing and promotes it;
without one, each shard updates the active collection incrementally (the CronJob).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from core.errors import FailedPrecondition, InvalidArgument, Unavailable
from core.filters import literal
from core.index_port import ReindexIndex
from core.records import METADATA_SCHEMA, SCHEMA_VERSION, ImageMetadata, item_hash, make_row
from inference.encoder_port import ImageEncoder
from inference.images import DecoderFailure, ImageLimits, normalize
from reindex.decoding import Decoded, Decoders, Entry
from reindex.report import ReindexReport
from reindex.sources import ImageFile, Shard, Source

logger = logging.getLogger(__name__)

# This many reads in a row failing with I/O errors stops the run (nothing deleted): the source is down,
# and going on would cost the retry budget for every file.
MAX_READ_FAILURES_IN_A_ROW = 20
HASH_READS_IN_FLIGHT = 8  # files read and hashed at a time before the pipeline (threads: the reads are I/O)


@dataclass
class _Plan:
    """What a run found before it wrote anything: the collection, the rows it may replace or delete, and the listing."""

    collection: str
    keys: frozenset[str]  # the sources' keys, as rows record them
    entries: list[Entry]
    own: dict[str, str] = field(default_factory=dict)  # id -> content hash of the rows this run may replace or delete
    own_sources: dict[str, str] = field(default_factory=dict)  # id -> source recorded on those rows
    foreign: dict[str, str] = field(default_factory=dict)  # id -> source of rows of other sources (never touched)
    scoped: bool = True  # deletions are limited to the rows of this run's sources (schema 2)
    may_delete: bool = True
    replaced: str | None = None  # a full run: the collection the alias points at now
    schema: int = SCHEMA_VERSION  # the row schema of the collection it writes (a full run: a new one, the current schema)


def _batches(items: list[Entry], size: int) -> Iterator[list[Entry]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Reindexer:
    """Runs reindex passes with one encoder and one index."""

    def __init__(
        self,
        encoder: ImageEncoder,
        index: ReindexIndex,
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

    async def run(
        self,
        sources: Source | Sequence[Source],
        full: bool = False,
        progress: bool = True,
        shard: Shard = Shard(),
        run_id: str | None = None,
        mirror: bool = False,
        max_failed: int = 0,
        allow_empty: bool = False,
    ) -> ReindexReport:
        """Index ``shard`` of ``sources`` (all of it by default); see the module docstring for the guarantees.

        ``run_id`` makes this one shard of a sharded full rebuild: it fills the run's collection
        and leaves the alias alone (``finalize`` promotes it). ``mirror`` (incremental runs of one
        source) deletes every row the source does not list, whatever source wrote it.
        ``max_failed`` failed files still let a full run swap the alias (their rows carried over).
        A source that lists no files while the index holds rows of it stops the run (an unmounted
        share looks like that), unless ``allow_empty``.

        Raises:
            FailedPrecondition: a source lists nothing but has rows (without ``allow_empty``).
            Unavailable: ``MAX_READ_FAILURES_IN_A_ROW`` reads in a row failed; nothing was deleted.
        """
        start = time.perf_counter()
        sources = [sources] if isinstance(sources, Source) else list(sources)
        if mirror and (full or run_id is not None or len(sources) != 1):
            raise InvalidArgument("mirror is for an incremental run of one source (a full rebuild holds only the sources it is given)")
        report = ReindexReport(full=full or run_id is not None, run_id=run_id, sources=[s.key for s in sources], max_failed=max_failed)
        listed: dict[str, int] = {}
        # The spawned decode workers take seconds to start and import: start them first, while the run lists.
        pool = Decoders(self.workers)
        try:
            plan = await self._list_and_plan(sources, shard, report, listed, full, run_id, mirror)
            if not allow_empty:
                await self._refuse_empty(plan, sources, listed)
            return await self._run(plan, full, shard, run_id, progress, report, pool, start)
        finally:
            pool.shutdown()

    @staticmethod
    def _list(sources: list[Source], shard: Shard, report: ReindexReport, listed: dict[str, int]) -> list[Entry]:
        """The files of every source that ``shard`` owns; an id listed by two sources is the first one's (the other is rejected).

        ``listed`` gets each source's count of files before the shard's share is taken.
        """
        entries: list[Entry] = []
        seen: dict[str, Source] = {}
        for source in sources:
            found = source.list()
            listed[source.key] = listed.get(source.key, 0) + len(found)
            for image in found:
                if not shard.owns(image.id):
                    continue
                report.scanned += 1
                if image.id in seen:
                    report.conflicts.append((image.id, f"{source} lists the same id as {seen[image.id]}; give one of them --id-prefix"))
                else:
                    seen[image.id] = source
                    entries.append((source, image))
        return entries

    async def _list_and_plan(
        self, sources: list[Source], shard: Shard, report: ReindexReport, listed: dict[str, int], full: bool, run_id: str | None, mirror: bool
    ) -> _Plan:
        """The listing and the plan; an incremental run (or a shard of a rebuild) reads what its collection holds while it lists.

        Resolving the collection and scanning its rows are Milvus round trips (a Strong query waits
        for the server's time tick); the listing is I/O: neither needs the other. A full run drops
        orphans, and a first run creates the alias's collection, only after its listing worked.
        """
        keys = frozenset(report.sources)
        listing = asyncio.create_task(asyncio.to_thread(self._list, sources, shard, report, listed))
        try:
            # A first incremental run creates (and aliases) its collection only once the listing worked: a mistyped
            # path leaves no empty collection behind the alias. A shard's run collection is not aliased.
            overlap = run_id is not None or (not full and await asyncio.to_thread(self.index.active_collection) is not None)
            plan = await self._plan([], keys, full, shard, run_id, mirror) if overlap else None
        except BaseException:
            await asyncio.gather(listing, return_exceptions=True)  # the listing thread runs to its end anyway
            raise
        entries = await listing
        if plan is None:
            plan = await self._plan([], keys, full, shard, run_id, mirror)
        plan.entries = entries
        return plan

    async def _plan(self, entries: list[Entry], keys: frozenset[str], full: bool, shard: Shard, run_id: str | None, mirror: bool) -> _Plan:
        """Resolve the collection and split what it holds into this run's rows and other sources' rows."""
        if run_id is not None:
            # A shard of a sharded rebuild: resume into the run's collection (a killed shard rerun skips what it wrote).
            collection = await asyncio.to_thread(self.index.run_collection, run_id)
        elif full:
            for orphan in await asyncio.to_thread(self.index.orphans):
                await asyncio.to_thread(self.index.drop, orphan)
            return _Plan("", keys, entries, replaced=await asyncio.to_thread(self.index.active_collection))
        else:
            collection = await asyncio.to_thread(self.index.ensure_active)
        schema = await asyncio.to_thread(self.index.schema_version, collection)
        plan = _Plan(collection, keys, entries, scoped=schema >= 2 and not mirror, may_delete=schema >= 2 or mirror, schema=schema)
        for item_id, (digest, origin) in (await asyncio.to_thread(self.index.stored, collection)).items():
            if not shard.owns(item_id):
                continue  # other shards' rows are theirs
            if plan.scoped and origin not in keys:
                plan.foreign[item_id] = origin
            else:
                plan.own[item_id], plan.own_sources[item_id] = digest, origin
        return plan

    async def _refuse_empty(self, plan: _Plan, sources: list[Source], listed: dict[str, int]) -> None:
        """Stop before anything is written when a source lists nothing while the index holds rows that the run would remove."""
        empty = [source for source in sources if not listed[source.key]]
        if not empty:
            return
        if plan.replaced is not None:  # a full run: what the collection it replaces holds
            origins = [origin for _, origin in (await asyncio.to_thread(self.index.stored, plan.replaced)).values()]
        else:
            origins = list(plan.own_sources.values())
        for source in empty:
            held = sum(1 for origin in origins if origin == source.key)
            if not plan.scoped or (plan.replaced is not None and len(empty) == len(sources)):
                held = len(origins)  # a mirror, a schema-1 collection, or a rebuild from nothing: every row would go
            if held:
                raise FailedPrecondition(
                    f"{source} lists no image files, but the index holds {held} rows from it: is it mounted, and is the path right? "
                    "Nothing was written or deleted; pass --allow-empty to let this run remove them"
                )

    async def _run(
        self,
        plan: _Plan,
        full: bool,
        shard: Shard,
        run_id: str | None,
        progress: bool,
        report: ReindexReport,
        pool: Decoders,
        start: float,
    ) -> ReindexReport:
        entries = plan.entries
        # Creating and loading a collection takes seconds: overlap it with hashing and the first decodes.
        creating = asyncio.create_task(asyncio.to_thread(self.index.new_collection)) if full and run_id is None else None
        report.collection = plan.collection
        hashes = await self._hash(plan, report, progress)
        todo = [(source, image) for source, image in entries if image.id in hashes and plan.own.get(image.id) != hashes[image.id]]
        report.unchanged = sum(1 for _, image in entries if image.id in hashes and plan.own.get(image.id) == hashes[image.id])
        pipeline_start = time.perf_counter()
        report.listing_seconds = pipeline_start - start
        try:
            await self._index(todo, hashes, report, progress, creating, pool)
        finally:
            if creating is not None and not report.collection:
                report.collection = await creating
        report.pipeline_seconds = time.perf_counter() - pipeline_start
        pool.stop()  # idle from here on: let the workers exit while the run seals and checks
        failed = {item_id for item_id, _ in report.failed}
        bad = failed | {item_id for item_id, _ in report.rejected} | set(report.gone)  # not conflicts: their id is another file's
        keep = ({image.id for _, image in entries if image.id in hashes} - bad) | (failed & plan.own.keys())
        await self._delete(plan, report, keep)
        if full and run_id is None and failed and not report.too_many_failed and plan.replaced is not None:
            keep |= await self._carry(plan, report, failed)
        sealed = not (report.indexed or report.deleted or report.carried) or await asyncio.to_thread(
            self.index.seal, report.collection
        )  # serve new rows from HNSW
        if not sealed:
            report.unsettled.append(f"Milvus did not finish indexing the rows of {report.collection} in time")
        if shard.count == 1 and run_id is None and plan.may_delete:
            await self._verify(report, keep, None if full or not plan.scoped else plan.keys, hashes)
        if full and run_id is None:
            await self._promote(plan, report, keep)
        report.seconds = time.perf_counter() - start
        return report

    async def _hash(self, plan: _Plan, report: ReindexReport, progress: bool) -> dict[str, str]:
        """The content hash of every file this run may index; the rest get their outcome.

        ``HASH_READS_IN_FLIGHT`` files are read at a time (an S3 read is a round trip), their
        outcomes taken in listing order, so the count of failed reads in a row is the listing's.
        """
        hashes: dict[str, str] = {}
        owners: set[str] = set()
        in_a_row = 0
        with_time = plan.schema >= METADATA_SCHEMA  # a collection that stores the modification time rewrites a file whose time changed

        def digest(source: Source, image: ImageFile) -> str:
            return item_hash(source.read(image, self.limits.max_bytes), image.uri, image.labels, image.modified_time if with_time else None)

        async def settle(source: Source, image: ImageFile, reading: asyncio.Future[str]) -> None:
            nonlocal in_a_row
            try:
                hashes[image.id] = await reading
                in_a_row = 0
            except Exception as exc:  # every failure is one file's outcome
                await self._outcome(report, source, image, exc)
                in_a_row = in_a_row + 1 if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) else 0
                if in_a_row >= MAX_READ_FAILURES_IN_A_ROW:
                    raise Unavailable(
                        f"the last {in_a_row} reads from {source} all failed (the last: {exc}); stopped before reading the rest: nothing was deleted"
                    ) from exc

        reads: deque[tuple[Source, ImageFile, asyncio.Future[str]]] = deque()
        try:
            for source, image in tqdm(plan.entries, unit="file", desc="hashing", disable=not progress, dynamic_ncols=True, leave=False):
                if image.id in plan.foreign:
                    owner = plan.foreign[image.id] or "UpsertImages (no source)"
                    report.conflicts.append((image.id, f"the id is taken by a row of {owner}; index {source} with --id-prefix, or delete that row"))
                    owners.add(owner)
                    continue
                reads.append((source, image, asyncio.ensure_future(asyncio.to_thread(digest, source, image))))
                if len(reads) >= HASH_READS_IN_FLIGHT:
                    await settle(*reads.popleft())
            while reads:
                await settle(*reads.popleft())
        finally:
            for _, _, reading in reads:  # a run stopped by failed reads: the rest are not waited for
                reading.cancel()
        report.notes += [f"if these files moved here from {owner}, 't2i reindex --full' (or --mirror) replaces the old rows" for owner in sorted(owners)]
        return hashes

    async def _outcome(self, report: ReindexReport, source: Source, image: ImageFile, exc: BaseException) -> None:
        """File ``image`` could not be indexed because of ``exc``: rejected, failed or gone (``reindex.report``)."""
        if isinstance(exc, FileNotFoundError) and await asyncio.to_thread(source.is_gone, image):
            report.gone.append(image.id)
        elif isinstance(exc, DecoderFailure):
            logger.error("decoding %s failed unexpectedly; its row is kept", image.uri, exc_info=exc)
            report.failed.append((image.id, str(exc)))
        elif isinstance(exc, InvalidArgument):
            report.rejected.append((image.id, str(exc)))
        elif isinstance(exc, OSError):
            report.failed.append((image.id, f"could not read it: {exc}"))
        else:
            logger.error("processing %s failed unexpectedly; its row is kept", image.uri, exc_info=exc)
            report.failed.append((image.id, f"processing failed: {type(exc).__name__}: {exc}"))

    async def _delete(self, plan: _Plan, report: ReindexReport, keep: set[str]) -> None:
        """Delete this run's rows whose file is removed, gone or rejected (never a failed file's)."""
        stale = [item_id for item_id in plan.own if item_id not in keep]
        if stale and plan.may_delete:
            report.deleted = await asyncio.to_thread(self.index.delete, report.collection, stale)
        elif stale:
            report.notes.append(
                f"{report.collection} predates row schema 2: its rows do not record their source, so the {len(stale)} rows of "
                "files that are not listed were not deleted; 't2i reindex --full' moves it to the new schema (or --mirror, if this is its only source)"
            )

    async def _carry(self, plan: _Plan, report: ReindexReport, failed: set[str]) -> set[str]:
        """A full run that may swap with failed files: copy their rows from the collection it replaces, so they are not lost."""
        assert plan.replaced is not None
        if await asyncio.to_thread(self.index.stamp_of, plan.replaced) != self.index.stamp:
            report.notes.append(
                f"the rows of the failed files cannot be carried over ({plan.replaced} holds another model's vectors), so --max-failed cannot apply"
            )
            report.max_failed = 0  # swapping now would lose them
            return set()
        origins = {image.id: source.key for source, image in plan.entries}
        copied = await asyncio.to_thread(self.index.copy_rows, plan.replaced, report.collection, sorted(failed), origins)
        report.carried = len(copied)
        return set(copied)

    async def _promote(self, plan: _Plan, report: ReindexReport, keep: set[str]) -> None:
        """Swap the alias to the new collection, unless files failed or Milvus did not confirm it; say what it will not hold."""
        if report.too_many_failed:
            report.notes.append(f"{len(report.failed)} files failed, more than --max-failed {report.max_failed} allows")
            return
        if report.unsettled:
            return
        if plan.replaced is not None:
            left: dict[str, int] = {}
            for item_id, (_, origin) in (await asyncio.to_thread(self.index.stored, plan.replaced)).items():
                if item_id not in keep and origin not in plan.keys:
                    left[origin] = left.get(origin, 0) + 1
            for origin, count in sorted(left.items()):
                what = origin or "no recorded source (UpsertImages, or rows of schema 1)"
                report.notes.append(f"the new collection does not hold {count} rows of {plan.replaced} from {what}: this run was not given that source")
                logger.warning("%s", report.notes[-1])
        await asyncio.to_thread(self.index.promote, report.collection, self.keep_previous)
        report.promoted = True

    async def _verify(
        self, report: ReindexReport, expected: set[str], keys: frozenset[str] | None, digests: Mapping[str, str] | None = None, attempts: int = 4
    ) -> None:
        """Make sure the collection holds exactly ``expected`` (of the sources ``keys``; None: all of it), deleting again what should be gone.

        A count is cheap; only when it disagrees with the listing is the collection rescanned.
        After a Milvus restart, a killed run's rerun has found (rarely: about one rerun in 26 of the
        chaos campaign) a deleted file's row back, or a count that still included a deleted row
        for a moment; once a finished run's deleted row and the replaced version of a changed
        file came back after it ended, so the next run must mend them. Milvus 2.3 has known ways
        to lose or delay a delete: rows of removed files are deleted again, ids that two rows hold
        are written once more (an upsert replaces every copy; looked for only once a surplus has
        outlasted one pause, since a lagging count is the common case and the search costs a count
        per 1,000 ids), and a count that disagrees with neither is given a few seconds. A count that
        still disagrees, or a rewritten id whose surviving copy is not the file's hash in
        ``digests`` (Milvus returned the replaced copy), is reported as unsettled (the run exits
        non-zero; the rerun re-indexes such a file, its hash differing).
        """
        expression = "" if keys is None else "source in [" + ", ".join(literal(key) for key in sorted(keys)) + "]"
        count = len(expected)
        for attempt in range(attempts):
            count = await asyncio.to_thread(self.index.count, report.collection, expression=expression)
            if count == len(expected):
                return
            stored = await asyncio.to_thread(self.index.stored, report.collection)
            extra = sorted(item_id for item_id, (_, origin) in stored.items() if item_id not in expected and (keys is None or origin in keys))
            if extra:
                logger.warning("%s still holds %d rows of files that are gone (%s): deleting them again", report.collection, len(extra), ", ".join(extra[:3]))
                report.deleted += await asyncio.to_thread(self.index.delete, report.collection, extra)
                await asyncio.to_thread(self.index.seal, report.collection)
            elif attempt and count > len(expected) and (doubled := await self._doubled(report.collection, stored, keys)):
                logger.warning("%s holds %d ids twice (%s): writing each once more, as one row", report.collection, len(doubled), ", ".join(doubled[:3]))
                await asyncio.to_thread(self.index.copy_rows, report.collection, report.collection, doubled, {})  # an upsert replaces every copy
                await asyncio.to_thread(self.index.seal, report.collection)
                survivors = await asyncio.to_thread(self.index.stored, report.collection)
                older = sorted(i for i in doubled if digests is not None and i in digests and survivors.get(i, ("", ""))[0] != digests[i])
                if older:
                    report.unsettled.append(
                        f"{len(older)} ids kept the older of their two rows ({', '.join(older[:3])}); rerun the reindex: it re-indexes those files"
                    )
                    logger.warning("%s", report.unsettled[-1])
            else:
                await asyncio.sleep(0.5 * 2**attempt)  # the count lags a delete: give it time
        report.unsettled.append(f"{report.collection} counts {count} rows of these sources where {len(expected)} are expected; rerun the reindex")
        logger.warning("%s", report.unsettled[-1])

    async def _doubled(self, collection: str, stored: dict[str, tuple[str, str]], keys: frozenset[str] | None) -> list[str]:
        """The ids of these sources that two rows hold (``count`` says more rows than ``stored`` has ids)."""
        ids = sorted(item_id for item_id, (_, origin) in stored.items() if keys is None or origin in keys)
        return await asyncio.to_thread(self.index.duplicated, collection, ids)

    async def _index(
        self,
        todo: list[Entry],
        hashes: dict[str, str],
        report: ReindexReport,
        progress: bool,
        creating: asyncio.Task[str] | None,
        pool: Decoders,
    ) -> None:
        if not todo:
            return
        config = self.encoder.preprocess_config
        bar = tqdm(total=len(todo), unit="img", desc="indexing", disable=not progress, dynamic_ncols=True)
        in_flight: deque[asyncio.Task[None]] = deque()
        try:

            def submit(batch: list[Entry]) -> list[tuple[Entry, Future[Decoded]]]:
                return [(entry, pool.submit(entry, config, self.limits)) for entry in batch]

            batches = list(_batches(todo, self.batch_size))
            decoding = deque(submit(batch) for batch in batches[: self.in_flight])  # decode ahead of the encoder
            queued = iter(batches[self.in_flight :])
            while decoding:
                pending = decoding.popleft()
                if upcoming := next(queued, None):
                    decoding.append(submit(upcoming))
                decoded, good, restarted = await self._collect(pending, pool, report)
                if restarted:  # the batches decoding ahead were in the dead pool too: they start again in the new one
                    decoding = deque(submit([entry for entry, _ in batch]) for batch in decoding)
                if good:
                    # Several batches in flight keep Triton busy while the last one's rows are inserted.
                    pixels = normalize(np.stack([crop for crop, _ in decoded]), config)
                    metadata = [read for _, read in decoded]
                    in_flight.append(asyncio.create_task(self._encode_and_insert(good, metadata, pixels, hashes, report, creating)))
                    if len(in_flight) >= self.in_flight:
                        await in_flight.popleft()
                bar.update(len(pending))
            while in_flight:
                await in_flight.popleft()
        finally:
            for task in in_flight:
                task.cancel()
            bar.close()

    async def _collect(self, pending: list[tuple[Entry, Future[Decoded]]], pool: Decoders, report: ReindexReport) -> tuple[list[Decoded], list[Entry], bool]:
        """The crops (and metadata) of one batch and their files (the others get their outcome), and whether the pool had to be restarted.

        A worker that died takes every file it was given: those are decoded again one at a time in
        a new pool, so only a file that kills a worker again fails.
        """
        loop = asyncio.get_running_loop()
        crops: list[Decoded] = []
        good, orphaned = [], []
        for entry, future in pending:
            try:
                crops.append(await asyncio.wrap_future(future, loop=loop))
                good.append(entry)
            except BrokenProcessPool:
                orphaned.append(entry)
            except Exception as exc:  # noqa: BLE001 - a worker failure is that file's outcome only
                await self._outcome(report, entry[0], entry[1], exc)
        if orphaned:
            pool.restart()
            for entry, crop in await self._alone(pool, orphaned, report):
                crops.append(crop)
                good.append(entry)
        return crops, good, bool(orphaned)

    async def _alone(self, pool: Decoders, entries: list[Entry], report: ReindexReport) -> list[tuple[Entry, Decoded]]:
        """Decode files one at a time after a worker died; a file that fails (killing a worker again, or not) gets its outcome."""
        decoded = []
        for entry in entries:
            try:
                decoded.append((entry, await asyncio.wrap_future(pool.submit(entry, self.encoder.preprocess_config, self.limits))))
            except Exception as exc:  # noqa: BLE001 - its own outcome
                if isinstance(exc, BrokenProcessPool):
                    logger.error("the decode worker died reading %s (twice); it fails, its row is kept", entry[1].uri)
                    pool.restart()
                await self._outcome(report, entry[0], entry[1], exc)
        return decoded

    async def _encode_and_insert(
        self,
        images: list[Entry],
        metadata: list[ImageMetadata],
        pixels: np.ndarray,
        hashes: dict[str, str],
        report: ReindexReport,
        creating: asyncio.Task[str] | None,
    ) -> None:
        vectors = await self.encoder.encode_pixels(pixels)
        rows = [make_row(f.id, v, f.uri, f.labels, hashes[f.id], source.key, read) for (source, f), read, v in zip(images, metadata, vectors, strict=True)]
        if not report.collection and creating is not None:
            report.collection = await creating
        await asyncio.to_thread(self.index.upsert, report.collection, rows)
        report.indexed += len(images)
        if self.on_batch is not None:
            self.on_batch(report)
