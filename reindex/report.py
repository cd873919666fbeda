"""What one reindex run did, file by file, and the exit code it earns.

Every listed file ends in one of these outcomes:

- *indexed* or *unchanged*: its row holds its current bytes.
- *rejected*: the bytes are not a usable image (not an image, truncated, too large, too small).
  Its row, if any, is deleted: the file is bad now. A file whose id is another file's (a row of
  another source, or a second source of the same run) is rejected too, as a *conflict*, and the
  other file's row is left as it is.
- *failed*: it could not be read or processed (an I/O or network error after the retries, a worker
  crash, an unexpected decoder exception). Its existing row is kept, never deleted; a rerun picks
  it up.
- *gone*: it disappeared between the listing and the read; its row is deleted like any removed file's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Exit codes of ``t2i reindex`` (the README lists them); 2 is any error that stopped the run.
EXIT_OK = 0  # every file indexed, unchanged, rejected (reported) or deleted as it should be
EXIT_REJECTED = 1  # --strict, and some files were rejected
EXIT_ERROR = 2  # the run stopped with an error; a --full run swapped nothing
EXIT_FAILED = 3  # files could not be read (more than --max-failed): their rows were kept; rerun; a --full run swapped nothing
EXIT_UNSETTLED = 4  # Milvus did not confirm the result (sealing timed out, or the end-of-run check disagreed); rerun; a --full run swapped nothing


@dataclass
class ReindexReport:
    """What one run did."""

    collection: str = ""
    full: bool = False
    run_id: str | None = None  # one shard of a sharded rebuild: 't2i finalize' promotes
    sources: list[str] = field(default_factory=list)
    scanned: int = 0
    indexed: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # rejected because the id is another file's
    failed: list[tuple[str, str]] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    max_failed: int = 0
    carried: int = 0  # a --full run: rows of failed files copied from the collection it replaces
    promoted: bool = False  # a --full run: the alias now points at ``collection``
    unsettled: list[str] = field(default_factory=list)  # what Milvus did not confirm
    notes: list[str] = field(default_factory=list)  # what a person should know (rows not carried, a schema that limits the run)
    seconds: float = 0.0  # the whole run
    listing_seconds: float = 0.0  # listing, reading what the collection holds, and hashing: before the pipeline starts
    pipeline_seconds: float = 0.0  # decoding, encoding and inserting

    @property
    def finishing_seconds(self) -> float:
        """What the run spent after the pipeline: deletes, carrying rows, sealing, the end-of-run check and the swap."""
        return max(0.0, self.seconds - self.listing_seconds - self.pipeline_seconds)

    @property
    def images_per_second(self) -> float:
        """Indexed images per second of wall time (the whole job: collection, hashing, sealing included)."""
        return self.indexed / self.seconds if self.seconds else 0.0

    @property
    def pipeline_images_per_second(self) -> float:
        """Indexed images per second of the decode, encode and insert pipeline alone."""
        return self.indexed / self.pipeline_seconds if self.pipeline_seconds else 0.0

    @property
    def too_many_failed(self) -> bool:
        """More files failed than ``max_failed`` allows."""
        return len(self.failed) > self.max_failed

    def summary(self) -> str:
        """One line for people."""
        mode = "full rebuild" if self.full else "incremental"
        return (
            f"{mode} into {self.collection}: {self.scanned} files: {self.indexed} indexed, {self.unchanged} unchanged, "
            f"{len(self.rejected) + len(self.conflicts)} rejected, {len(self.failed)} failed; {self.deleted} rows deleted in {self.seconds:.1f} s "
            f"({self.images_per_second:.1f} img/s; {self.pipeline_images_per_second:.1f} img/s while decoding, encoding and inserting): "
            f"listing and hashing {self.listing_seconds:.1f} s, pipeline {self.pipeline_seconds:.1f} s, "
            f"deletes, sealing and checks {self.finishing_seconds:.1f} s"
        )

    def details(self) -> list[str]:
        """The lines under the summary: each rejected, failed and gone file, and what the run did not do."""
        lines = [f"  rejected {item_id}: {reason}" for item_id, reason in self.rejected + self.conflicts]
        lines += [f"  failed {item_id}: {reason}" for item_id, reason in self.failed]
        lines += [f"  gone {item_id}: removed since the listing; its row was deleted" for item_id in self.gone]
        if self.failed:
            if self.promoted:
                kept = f"{self.carried} of their rows were carried over from the replaced collection"
            elif self.run_id is not None:
                kept = "the run's collection lacks them; 't2i finalize' counts them as missing"
            else:
                kept = "their rows were kept"
            lines.append(f"{len(self.failed)} files could not be read or processed ({kept}); a rerun picks them up")
        lines += self.notes
        lines += [f"not confirmed: {problem}" for problem in self.unsettled]
        if self.full and not self.promoted and self.run_id is None:
            lines.append(f"nothing swapped: the alias still points where it did; {self.collection} is left unpromoted (the next --full drops it)")
        return lines

    def exit_code(self, strict: bool = False) -> int:
        """``EXIT_FAILED``, ``EXIT_UNSETTLED``, ``EXIT_REJECTED`` (with ``strict``) or ``EXIT_OK``, in that order."""
        if self.too_many_failed:
            return EXIT_FAILED
        if self.unsettled:
            return EXIT_UNSETTLED
        return EXIT_REJECTED if strict and (self.rejected or self.conflicts) else EXIT_OK
