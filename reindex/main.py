"""``t2i reindex PATH``: index a folder into Milvus through Triton."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from core.index import index_from_settings
from core.records import ModelStamp
from core.settings import Settings
from inference.images import ImageLimits
from inference.triton_client import encoder_from_settings
from reindex.job import Reindexer, ReindexReport

EXIT_OK, EXIT_SKIPPED = 0, 1  # t2i exits 2 on failure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``t2i reindex``."""
    parser.add_argument("path", type=Path, help="folder of JPG/PNG/BMP/GIF/TIFF/WebP files (searched recursively)")
    parser.add_argument("--full", action="store_true", help="build a new collection and swap the alias at the end")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any file was skipped")
    parser.add_argument("--batch-size", type=int, default=32, help="images per Triton request")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--batch-timeout", type=float, default=120.0, help="seconds one batch may take in Triton (CPU encoding of 32 images takes seconds)")


async def reindex(
    settings: Settings,
    path: Path,
    full: bool,
    batch_size: int,
    workers: int,
    progress: bool,
    batch_timeout_s: float = 120.0,
    on_batch: Callable[[ReindexReport], None] | None = None,
) -> ReindexReport:
    """Run one reindex pass with the Triton and Milvus of ``settings`` (``on_batch``: see ``Reindexer``)."""
    encoder = encoder_from_settings(settings, timeout_s=max(settings.triton_timeout_s, batch_timeout_s))
    index = index_from_settings(settings, ModelStamp.of(encoder.manifest))
    limits = ImageLimits.from_settings(settings)
    try:
        return await Reindexer(encoder, index, limits, batch_size, workers, on_batch=on_batch).run(path, full, progress)
    finally:
        await encoder.close()
        index.close()


def report_exit_code(report: ReindexReport, strict: bool) -> int:
    """Print the report; 0 when every good file was indexed, 1 with --strict and skips."""
    print(report.summary())
    for item_id, reason in report.skipped:
        print(f"  skipped {item_id}: {reason}")
    return EXIT_SKIPPED if strict and report.skipped else EXIT_OK


def command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``t2i reindex``."""
    report = asyncio.run(
        reindex(settings, args.path, args.full, args.batch_size, args.workers, not args.no_progress and sys.stderr.isatty(), args.batch_timeout)
    )
    return report_exit_code(report, args.strict)
