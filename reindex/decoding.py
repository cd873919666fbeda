"""The reindex job's decode processes: read, decode, resize and crop files in a pool that is made again when a worker dies."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from core.lifetime import die_with_parent
from core.records import ImageMetadata
from inference.images import ImageLimits, PreprocessConfig, load_crop_with_metadata
from reindex.sources import ImageFile, Source

Entry = tuple[Source, ImageFile]
Decoded = tuple[np.ndarray, ImageMetadata]  # the uint8 crop, and what the decode read (with the listing's modification time)


def _ready() -> bool:
    """Worker: nothing; submitted first so the pool's processes start (and import) early."""
    return True


def _load(source: Source, image: ImageFile, config: PreprocessConfig, limits: ImageLimits) -> Decoded:
    """Worker: read, decode, resize and crop one file (runs in the process pool), and read its metadata on the way.

    It returns the uint8 crop, a quarter of the bytes of the float32 pixels: the pipe back from
    the pool cost more than the decoding (docs/benchmarks.md, the GPU section). The metadata's
    bytes are the file's size as read, its modification time the listing's.
    """
    crop, metadata = load_crop_with_metadata(source.read(image, limits.max_bytes), config, limits)
    return crop, dataclasses.replace(metadata, modified_time=image.modified_time)


class Decoders:
    """The decode process pool, made again when a worker dies (an out-of-memory kill, a crash in a decoder)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # Spawned decode processes take about a second to start: start them now, not at the first batch.
        # The workers die with this process, even when it is SIGKILLed (core.lifetime).
        executor = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent, initargs=(signal.SIGKILL, os.getpid())
        )
        for _ in range(self.workers):
            executor.submit(_ready)
        return executor

    def submit(self, entry: Entry, config: PreprocessConfig, limits: ImageLimits) -> Future[Decoded]:
        """Decode one file in a worker; a pool that broke meanwhile answers with the failure."""
        try:
            return self.executor.submit(_load, entry[0], entry[1], config, limits)
        except RuntimeError as exc:  # BrokenProcessPool: the caller starts a new pool and retries
            future: Future[Decoded] = Future()
            future.set_exception(exc)
            return future

    def restart(self) -> None:
        """Replace a broken pool by a new one."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = self._start()

    def stop(self) -> None:
        """Let the workers exit without waiting for them (``shutdown`` waits)."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        self.executor.shutdown(cancel_futures=True)
