"""``t2i reindex``, ``t2i finalize`` and ``t2i rollback``: fill Milvus through Triton, promote, roll back.

``t2i reindex LOCATION [LOCATION ...]`` indexes folders or ``s3://bucket/prefix``es; its exit codes
are ``reindex.report``'s (0 done, 1 rejected files with --strict, 2 error, 3 failed files, 4 not
confirmed by Milvus). Sharded, as N processes (or
the pods of an Indexed Job): ``--shards N`` with ``--shard-index I`` or ``JOB_COMPLETION_INDEX``.
With ``--run-id``, the shards fill one new collection that ``t2i finalize`` verifies against the
listing and puts behind the alias; ``t2i rollback`` swaps back to the collection it replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.errors import FailedPrecondition, InvalidArgument
from core.index import ImageIndex, index_from_settings
from core.manifest import Manifest
from core.records import ModelStamp
from core.settings import Settings
from inference.images import ImageLimits
from inference.triton_client import encoder_from_settings
from reindex.job import Reindexer
from reindex.report import EXIT_ERROR, EXIT_OK, ReindexReport
from reindex.sources import Shard, Source

SEAL_WAIT_S = 1800.0  # how long finalize waits for the HNSW index to cover every row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``t2i reindex``."""
    parser.add_argument(
        "location",
        nargs="+",
        help="folders or s3://bucket/prefixes of JPG/PNG/BMP/GIF/TIFF/WebP files (searched recursively); rows remember which one they came from",
    )
    parser.add_argument("--full", action="store_true", help="build a new collection from these sources alone and swap the alias at the end")
    parser.add_argument("--mirror", action="store_true", help="incremental, one source: delete every row it does not list, whichever source or client wrote it")
    parser.add_argument(
        "--id-prefix",
        action="append",
        default=None,
        help="put before the ids of a source's files (once per location, in order), so two folders with the same file names do not collide",
    )
    parser.add_argument(
        "--allow-empty", action="store_true", help="let a location that lists no files remove its rows (refused by default: an unmounted share lists nothing)"
    )
    parser.add_argument(
        "--max-failed", type=int, default=0, help="files that may fail to be read while a --full run still swaps (their rows are carried over); default 0"
    )
    parser.add_argument("--drop-previous", action="store_true", help="with --full: drop the replaced collection instead of keeping it for 't2i rollback'")
    parser.add_argument("--shards", type=int, default=1, help="split the source into this many shards by a stable hash of each file's id")
    parser.add_argument("--shard-index", type=int, default=None, help="the shard this process indexes (default JOB_COMPLETION_INDEX)")
    parser.add_argument("--run-id", default=None, help="shards of one full rebuild fill the collection of this run; 't2i finalize' promotes it")
    parser.add_argument("--model-version", type=int, default=None, help="the model version to encode with (default: the newest export)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any file was rejected (not a usable image)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per Triton request")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--batch-timeout", type=float, default=120.0, help="seconds one batch may take in Triton (CPU encoding of 32 images takes seconds)")


def add_finalize_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``t2i finalize``."""
    parser.add_argument("location", help="the folder or s3://bucket/prefix the shards indexed (listed again to verify the collection)")
    parser.add_argument("--run-id", required=True, help="the run whose collection to promote")
    parser.add_argument("--max-missing", type=int, default=0, help="files of the listing that may be missing (rejected or failed in the shards)")
    parser.add_argument("--id-prefix", default="", help="the --id-prefix the shards were given")
    parser.add_argument("--drop-previous", action="store_true", help="drop the replaced collection instead of keeping it for 't2i rollback'")


async def reindex(
    settings: Settings,
    location: str | Sequence[str],
    full: bool,
    batch_size: int,
    workers: int,
    progress: bool,
    batch_timeout_s: float = 120.0,
    on_batch: Callable[[ReindexReport], None] | None = None,
    shard: Shard = Shard(),
    run_id: str | None = None,
    keep_previous: bool = True,
    model_version: int | None = None,
    mirror: bool = False,
    max_failed: int = 0,
    id_prefixes: Sequence[str] = (),
    allow_empty: bool = False,
) -> ReindexReport:
    """Run one reindex pass (one shard of it) over one or more locations with the Triton and Milvus of ``settings``.

    ``on_batch``, ``mirror``, ``max_failed``: see ``Reindexer``; ``id_prefixes``: one per location, or none.
    """
    locations = [str(location)] if isinstance(location, str | os.PathLike) else [str(each) for each in location]
    if id_prefixes and len(id_prefixes) != len(locations):
        raise InvalidArgument(f"--id-prefix is given {len(id_prefixes)} times for {len(locations)} locations: give it once per location, in order")
    sources = [Source(each, settings.read_retry_s, prefix) for each, prefix in zip(locations, list(id_prefixes) or [""] * len(locations), strict=True)]
    encoder = encoder_from_settings(settings, timeout_s=max(settings.triton_timeout_s, batch_timeout_s), version=model_version)
    index = index_from_settings(settings, ModelStamp.of(encoder.manifest), retry_budget_s=settings.milvus_retry_s)
    limits = ImageLimits.from_settings(settings)
    try:
        if not await encoder.ready():
            raise FailedPrecondition(
                f"Triton at {settings.triton_url} does not serve version {encoder.version} of the CLIP models "
                f"({encoder.manifest.model_id}); load it first ('t2i models reload')"
            )
        reindexer = Reindexer(encoder, index, limits, batch_size, workers, on_batch=on_batch, keep_previous=keep_previous)
        return await reindexer.run(sources, full, progress, shard, run_id, mirror, max_failed, allow_empty)
    finally:
        await encoder.close()
        index.close()


@dataclass
class FinalizeReport:
    """What ``finalize`` found and did."""

    collection: str
    listed: int
    indexed: int
    missing: list[str] = field(default_factory=list)
    previous: str | None = None
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for people."""
        kept = f"; {self.previous} is kept for 't2i rollback'" if self.previous and self.previous not in self.dropped else ""
        lines = [f"promoted {self.collection}: {self.indexed} of {self.listed} listed files indexed (was {self.previous or 'nothing'}){kept}"]
        lines += [f"  missing {item_id}" for item_id in self.missing[:20]]
        lines += [f"  dropped {name}" for name in self.dropped]
        return "\n".join(lines)


def finalize(index: ImageIndex, source: Source, run_id: str, max_missing: int = 0, keep_previous: bool = True) -> FinalizeReport:
    """Verify a sharded run's collection against the listing and put it behind the alias.

    Waits until the HNSW index covers every row and the collection is loaded, checks that it holds
    exactly the listed ids (up to ``max_missing`` of them absent), then swaps the alias, keeping
    the replaced collection for rollback unless told not to.

    Raises:
        NotFound: the run has no collection.
        FailedPrecondition: rows are missing or foreign, or the index did not finish; nothing was swapped.
    """
    collection = index.run_collection(run_id, create=False)
    if not index.seal(collection, wait_s=SEAL_WAIT_S):
        raise FailedPrecondition(f"the index of {collection} did not cover every row within {SEAL_WAIT_S:.0f} s; run 't2i finalize' again")
    if not index.loaded(collection):
        raise FailedPrecondition(f"{collection} is not loaded for search; run 't2i finalize' again")
    listed = {image.id for image in source.list()}
    stored = set(index.hashes(collection))
    count = index.count(collection)
    missing, extra = sorted(listed - stored), sorted(stored - listed)
    if extra or count != len(stored):
        raise FailedPrecondition(f"{collection} holds {len(extra)} ids that {source} does not list (e.g. {extra[:3]}); count {count}; nothing swapped")
    if len(missing) > max_missing:
        raise FailedPrecondition(
            f"{collection} lacks {len(missing)} of {len(listed)} listed files (e.g. {missing[:3]}); rerun the failed shards, "
            "or allow them with --max-missing; nothing swapped"
        )
    previous, dropped = index.promote(collection, keep_previous)
    return FinalizeReport(collection, len(listed), len(stored), missing, previous, dropped)


def report_exit_code(report: ReindexReport, strict: bool) -> int:
    """Print the report and its details; the exit code is ``ReindexReport.exit_code`` (the module docstring lists them)."""
    print(report.summary())
    for line in report.details():
        print(line)
    return report.exit_code(strict)


def _writer_index(settings: Settings) -> ImageIndex:
    """An index for promoting and rolling back, stamped with the newest export (only ``run_collection`` checks the stamp)."""
    # No Triton channel needed.
    return index_from_settings(settings, ModelStamp.of(Manifest.read(settings.model_repository)), retry_budget_s=settings.milvus_retry_s)


def command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``t2i reindex``."""
    shard = Shard.from_env(args.shards, args.shard_index)
    if args.shards > 1 and args.full and not args.run_id:
        print("error: a sharded --full rebuild needs --run-id (all shards fill one collection; 't2i finalize' promotes it)", file=sys.stderr)
        return EXIT_ERROR
    if args.run_id and len(args.location) != 1:
        print("error: --run-id takes one location ('t2i finalize' verifies the run against its listing)", file=sys.stderr)
        return EXIT_ERROR
    report = asyncio.run(
        reindex(
            settings,
            args.location,
            args.full,
            args.batch_size,
            args.workers,
            not args.no_progress and sys.stderr.isatty(),
            args.batch_timeout,
            shard=shard,
            run_id=args.run_id,
            keep_previous=not args.drop_previous,
            model_version=args.model_version,
            mirror=args.mirror,
            max_failed=args.max_failed,
            id_prefixes=args.id_prefix or (),
            allow_empty=args.allow_empty,
        )
    )
    if shard.count > 1:
        print(f"{shard}:", end=" ")
    return report_exit_code(report, args.strict)


def finalize_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``t2i finalize``."""
    index = _writer_index(settings)
    try:
        source = Source(args.location, settings.read_retry_s, args.id_prefix)
        print(finalize(index, source, args.run_id, args.max_missing, not args.drop_previous).summary())
    finally:
        index.close()
    return EXIT_OK


def rollback_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``t2i rollback``."""
    index = _writer_index(settings)
    try:
        active, previous = index.rollback()
    finally:
        index.close()
    print(f"alias {settings.collection_alias} now points at {active}; {previous} is kept as previous ('t2i rollback' again rolls forward)")
    return EXIT_OK
