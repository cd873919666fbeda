"""``t2i reindex PATH``: index a folder into Milvus through Triton."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from gateway.server import build_engine
from gateway.settings import Settings
from reindex.job import Reindexer, ReindexReport

EXIT_OK, EXIT_SKIPPED, EXIT_FAILED = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``t2i reindex``."""
    parser.add_argument("path", type=Path, help="folder of JPG/PNG/BMP/GIF/TIFF/WebP files (searched recursively)")
    parser.add_argument("--full", action="store_true", help="build a new collection and swap the alias at the end")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any file was skipped")
    parser.add_argument("--batch-size", type=int, default=32, help="images per Triton request")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--batch-timeout", type=float, default=120.0, help="seconds one batch may take in Triton (CPU encoding of 32 images takes seconds)")


async def reindex(settings: Settings, path: Path, full: bool, batch_size: int, workers: int, progress: bool, batch_timeout_s: float = 120.0) -> ReindexReport:
    """Run one reindex pass with the Triton and Milvus of ``settings``."""
    engine = build_engine(settings.model_copy(update={"triton_timeout_s": max(settings.triton_timeout_s, batch_timeout_s)}))
    try:
        return await Reindexer(engine.encoder, engine.index, engine.limits, batch_size, workers).run(path, full, progress)
    finally:
        await engine.encoder.close()
        engine.index.close()


def report_exit_code(report: ReindexReport, strict: bool) -> int:
    """Print the report; 0 when every good file was indexed, 1 with --strict and skips."""
    print(report.summary())
    for item_id, reason in report.skipped:
        print(f"  skipped {item_id}: {reason}")
    return EXIT_SKIPPED if strict and report.skipped else EXIT_OK


def command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``t2i reindex``."""
    report = asyncio.run(reindex(settings, args.path, args.full, args.batch_size, args.workers, not args.no_progress and sys.stderr.isatty(), args.batch_timeout))
    return report_exit_code(report, args.strict)
