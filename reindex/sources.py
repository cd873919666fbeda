"""Where the reindex job reads images from: a local folder or S3-compatible storage, through fsspec.

One code path lists, hashes and reads both. A location is a folder path, ``file://...`` or
``s3://bucket/prefix``. S3 credentials come from the standard AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``) or a profile
(``AWS_PROFILE``); ``T2I_S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL``) points at a non-AWS endpoint
such as MinIO. An image's id is its key relative to the folder or prefix, and its labels are the
names of the "folders" above it, the same for both kinds of storage.

Sharding: an Indexed Job's pods each take the files whose id hashes to their completion index.
The hash is SHA-256 of the id, so every pod computes the same split from the same listing, in any
order, on any machine.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from core.errors import InvalidArgument
from core.filters import MAX_TIME_US, MIN_TIME_US

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
READ_RETRY_FIRST_S, READ_RETRY_MAX_S = 0.25, 4.0
# Read errors that another attempt will not change: a file gone since the listing, no permission.
NOT_RETRIED = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


@dataclass(frozen=True)
class ImageFile:
    """One image found at the source: its id (key relative to the root), uri, labels, size in bytes and modification time.

    ``modified_time`` is in microseconds since the epoch (None when the listing gives none).
    """

    id: str
    uri: str
    labels: tuple[str, ...]
    size: int
    modified_time: int | None = None


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def modified_time(info: Mapping[str, object]) -> int | None:
    """The modification time in a listing entry, in microseconds since the epoch: a local file's ``mtime`` (seconds),
    an S3 object's ``LastModified`` (a datetime; naive ones are UTC), or another fsspec filesystem's ``mtime``; None when there is none."""
    value = info.get("mtime", info.get("LastModified"))
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
    micros: int | None = None
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
        micros = (moment - _EPOCH) // datetime.timedelta(microseconds=1)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        micros = round(value * 1_000_000)
    # A time no protobuf Timestamp can hold (NaN, infinite, before year 1 or after 9999) is unknown.
    return micros if micros is not None and MIN_TIME_US <= micros <= MAX_TIME_US else None


def shard_of(item_id: str, shards: int) -> int:
    """The shard (0..shards-1) that owns ``item_id``: a stable hash, the same in every process."""
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") % shards


@dataclass(frozen=True)
class Shard:
    """One part of a sharded run: ``index`` of ``count`` (``0/1`` is the whole source)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InvalidArgument(f"shard {self.index} of {self.count} does not exist: the index must be in 0..{self.count - 1}")

    def owns(self, item_id: str) -> bool:
        """True when this shard indexes (and may delete) ``item_id``."""
        return self.count == 1 or shard_of(item_id, self.count) == self.index

    def __str__(self) -> str:
        return f"shard {self.index}/{self.count}"

    @classmethod
    def from_env(cls, count: int, index: int | None = None) -> Shard:
        """Shard ``index`` of ``count``; the index defaults to ``JOB_COMPLETION_INDEX`` (an Indexed Job's pod), else 0."""
        if index is None:
            raw = os.environ.get("JOB_COMPLETION_INDEX", "0" if count == 1 else "")
            if not raw.isdigit():
                raise InvalidArgument(f"--shards {count} needs --shard-index or JOB_COMPLETION_INDEX (got {raw!r})")
            index = int(raw)
        return cls(index, count)


def storage_options(location: str) -> dict[str, Any]:
    """fsspec options for ``location``: the S3 endpoint from ``T2I_S3_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL``."""
    endpoint = os.environ.get("T2I_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    if location.startswith("s3://") and endpoint:
        return {"client_kwargs": {"endpoint_url": endpoint}}
    return {}


class Source:
    """A folder or bucket prefix of images. Picklable: the decode processes read through it too."""

    def __init__(self, location: str, retry_s: float = 0.0, id_prefix: str = ""):
        """Resolve ``location`` (a folder, ``file://``, or ``s3://bucket/prefix``); nothing is read yet.

        Args:
            location: The folder or prefix.
            retry_s: How long a read that failed with an I/O or network error is retried, with
                capped backoff, before the error is raised (``T2I_READ_RETRY_S``); 0 never retries.
            id_prefix: Put before every id (two folders that hold the same file names get ids of their own).
        """
        self.location = str(location)
        self.retry_s = retry_s
        self.id_prefix = id_prefix
        try:
            self.fs, root = fsspec.core.url_to_fs(self.location, **storage_options(self.location))
        except (ImportError, ValueError) as exc:
            raise InvalidArgument(f"cannot read {self.location}: {exc}") from exc
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = os.path.realpath(root) if self.local else root.rstrip("/")

    def __str__(self) -> str:
        return self.location

    @property
    def key(self) -> str:
        """What rows record as their source: the folder's real path, or ``s3://bucket/prefix``."""
        return self.root if self.local else self.fs.unstrip_protocol(self.root)

    def list(self) -> list[ImageFile]:
        """Image files under the root by suffix, sorted by id.

        Raises:
            InvalidArgument: the location is not a folder (or an empty/missing prefix).
        """
        try:
            if not self.fs.isdir(self.root):
                raise InvalidArgument(f"{self.location} is not a folder" + ("" if self.local else " (no object has this prefix)"))
            found = self.fs.find(self.root, detail=True)
        except (OSError, PermissionError) as exc:
            raise InvalidArgument(f"cannot list {self.location}: {exc}") from exc
        files = []
        for path, info in found.items():
            relative = path[len(self.root) :].lstrip("/")
            if info.get("type") == "file" and os.path.splitext(relative)[1].lower() in IMAGE_SUFFIXES:
                parts = relative.split("/")
                files.append(ImageFile(self.id_prefix + relative, self.uri(path), tuple(parts[:-1]), int(info.get("size") or 0), modified_time(info)))
        return sorted(files, key=lambda f: f.id)

    def uri(self, path: str) -> str:
        """What hits report for a file: its absolute path for folders, ``s3://bucket/key`` for S3."""
        return path if self.local else self.fs.unstrip_protocol(path)

    def read(self, image: ImageFile, max_bytes: int) -> bytes:
        """The bytes of one file; I/O and network errors are retried within ``retry_s``.

        Raises:
            InvalidArgument: larger than ``max_bytes``.
            FileNotFoundError: gone since the listing.
            OSError: it cannot be read (permissions, the network, a failing disk), after the retries.
        """
        give_up = time.monotonic() + self.retry_s
        pause = READ_RETRY_FIRST_S
        while True:
            try:
                return self._read_once(image, max_bytes)
            except NOT_RETRIED:
                raise
            except OSError as exc:
                if time.monotonic() + pause > give_up:
                    raise
                logger.warning("reading %s failed (%s); retrying in %.2f s", image.uri, exc, pause)
                time.sleep(pause)
                self.fs.invalidate_cache(self._path(image))  # S3: an object replaced meanwhile is read afresh
                pause = min(pause * 2, READ_RETRY_MAX_S)

    def is_gone(self, image: ImageFile) -> bool:
        """True when ``image`` no longer exists while its folder does (a folder that vanished, an unmounted share, is a failure, not a removal)."""
        try:
            self.fs.invalidate_cache()  # S3 answers from the listing's cache otherwise
            return bool(self.fs.isdir(self.root)) and not self.fs.exists(self._path(image))
        except OSError:
            return False

    def _path(self, image: ImageFile) -> str:
        return image.uri if self.local else f"{self.root}/{image.id[len(self.id_prefix) :]}"

    def _read_once(self, image: ImageFile, max_bytes: int) -> bytes:
        if image.size > max_bytes:
            raise InvalidArgument(f"file is {image.size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB")
        with self.fs.open(self._path(image), "rb") as handle:
            data: bytes = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise InvalidArgument(f"file is over the limit of {max_bytes / 2**20:.0f} MiB")
        return data
