"""Thumbnails of indexed image files: decoded with the product's own checks, resized, JPEG, cached."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from core.errors import InvalidArgument
from inference.images import ImageLimits, decode_image

LIMITS = ImageLimits()


def make_thumbnail(path: Path, longest_side: int) -> bytes:
    """A JPEG of ``path`` whose longest side is at most ``longest_side``.

    Raises:
        ValueError: the file is too large or not an image the product can decode.
    """
    if path.stat().st_size > LIMITS.max_bytes:
        raise ValueError(f"the file is over {LIMITS.max_bytes // 2**20} MiB")
    try:
        image = decode_image(path.read_bytes(), LIMITS)
    except InvalidArgument as exc:
        raise ValueError(str(exc)) from exc
    image.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


class ThumbnailCache:
    """A thread-safe LRU of thumbnail bytes keyed by file, modification time, size and side; 0 disables it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, int, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int, int]) -> bytes | None:
        """The cached thumbnail, or None."""
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def put(self, key: tuple[str, int, int, int], data: bytes) -> None:
        """Keep ``data``, evicting the least recently used beyond capacity."""
        if self.capacity <= 0:
            return
        with self._lock:
            self._entries[key] = data
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
