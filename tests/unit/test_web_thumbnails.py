"""Thumbnails: size, format, refusals, and the LRU that keeps them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from core.settings import WebSettings
from web.thumbnails import ThumbnailCache, make_thumbnail


def test_thumbnail_keeps_the_aspect_and_fits_the_side(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (800, 400), (10, 200, 30)).save(path)
    thumb = Image.open(io.BytesIO(make_thumbnail(path, 256)))
    assert thumb.format == "JPEG" and thumb.size == (256, 128)


def test_a_file_that_is_not_an_image_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "fake.png"
    path.write_bytes(b"<html>not an image</html>")
    with pytest.raises(ValueError, match="not a recognized image"):
        make_thumbnail(path, 256)


def test_cache_evicts_the_least_recently_used() -> None:
    cache = ThumbnailCache(2)
    a, b, c = ("a", 1, 1, 256), ("b", 1, 1, 256), ("c", 1, 1, 256)
    cache.put(a, b"A")
    cache.put(b, b"B")
    assert cache.get(a) == b"A"  # a is now the most recent
    cache.put(c, b"C")
    assert cache.get(b) is None and cache.get(a) == b"A" and cache.get(c) == b"C"


def test_a_zero_cache_keeps_nothing() -> None:
    cache = ThumbnailCache(0)
    cache.put(("a", 1, 1, 256), b"A")
    assert cache.get(("a", 1, 1, 256)) is None


def test_image_roots_are_resolved(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    assert WebSettings(image_roots=f"{tmp_path / 'alias'}::{real}").roots() == [real, real]
