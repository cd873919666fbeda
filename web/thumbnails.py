"""Thumbnails of indexed image files: decoded with the product's own checks, resized, JPEG, cached."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from core.errors import InvalidArgument
from core.lru import LruCache
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


# Thumbnail bytes by (file, modification time, size, side).
ThumbnailCache = LruCache[tuple[str, int, int, int], bytes]
