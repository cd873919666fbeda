"""Decoding untrusted bytes and CLIP preprocessing, against transformers' CLIPImageProcessor."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessor

from core.errors import InvalidArgument
from export.samples import sample_photos
from inference.images import ImageLimits, PreprocessConfig, decode_image, load_crop, load_pixels, normalize, preprocess, resize_shape

pytestmark = pytest.mark.torch  # transformers' CLIPImageProcessor is the reference; the photos are scikit-image's

REFERENCE = CLIPImageProcessor()


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize("size", [(224, 224), (640, 480), (480, 640), (300, 301), (50, 900), (17, 17), (1000, 223)])
def test_preprocess_matches_clip_image_processor(size: tuple[int, int]) -> None:
    image = gradient(*size)
    ours = preprocess([image], PreprocessConfig())
    expected = REFERENCE(images=image, return_tensors="np")["pixel_values"]
    assert ours.shape == expected.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_preprocess_matches_on_real_photos() -> None:
    photos = [decode_image(p.read_bytes()) for p in sample_photos(8)]
    assert len(photos) == 8
    np.testing.assert_allclose(preprocess(photos, PreprocessConfig()), REFERENCE(images=photos, return_tensors="np")["pixel_values"], atol=1e-6)


def test_normalize_is_bit_identical_to_per_pixel_arithmetic() -> None:
    config = PreprocessConfig()
    crops = np.random.default_rng(3).integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)
    scaled = (crops.astype(np.float64) * (1 / 255)).astype(np.float32)
    expected = ((scaled - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)).transpose(0, 3, 1, 2)
    batch = normalize(crops, config)
    assert batch.dtype == np.float32 and batch.shape == (5, 3, 224, 224) and batch.flags.c_contiguous
    np.testing.assert_array_equal(batch, expected)
    np.testing.assert_array_equal(normalize(crops[2], config), expected[2])


def test_uint8_crop_then_normalize_equals_float_pixels() -> None:
    """What the reindex pool sends (uint8 crops, normalized by the parent) is what SearchImage encodes."""
    config = PreprocessConfig()
    for path in sample_photos(3):
        crop = load_crop(path.read_bytes(), config)
        assert crop.dtype == np.uint8 and crop.shape == (224, 224, 3)
        np.testing.assert_array_equal(normalize(crop, config), load_pixels(path.read_bytes(), config))


def test_resize_shape_keeps_aspect_on_shortest_edge() -> None:
    assert resize_shape(640, 480, 224) == (298, 224)
    assert resize_shape(480, 640, 224) == (224, 298)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP"])
def test_formats_decode_to_rgb(fmt: str) -> None:
    decoded = decode_image(encode(gradient(64, 48), fmt))
    assert decoded.mode == "RGB" and decoded.size == (64, 48)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    decoded = decode_image(encode(gradient(64, 32), "JPEG", exif=exif))
    assert decoded.size == (32, 64)


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert decode_image(encode(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    la = Image.new("LA", (32, 32), (0, 255))
    assert decode_image(encode(la, "PNG")).getpixel((0, 0)) == (0, 0, 0)
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([10, 20, 30] + [0] * 765)
    assert decode_image(encode(palette, "PNG", transparency=0)).getpixel((0, 0)) == (255, 255, 255)
    assert decode_image(encode(palette, "PNG")).getpixel((0, 0)) == (10, 20, 30)


def test_grayscale_16bit_is_scaled_not_clipped() -> None:
    values = np.full((20, 20), 32896, dtype=np.uint16)  # mid-grey in 16 bits
    decoded = decode_image(encode(Image.fromarray(values), "PNG"))
    assert decoded.getpixel((0, 0)) == (128, 128, 128)
    assert decode_image(encode(Image.new("L", (20, 20), 77), "PNG")).getpixel((0, 0)) == (77, 77, 77)


def test_cmyk_jpeg_becomes_rgb() -> None:
    decoded = decode_image(encode(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG"))
    pixel = decoded.getpixel((5, 5))
    assert isinstance(pixel, tuple)
    red, green, blue = pixel
    assert decoded.mode == "RGB" and red > 200 and green < 60 and blue < 60


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (20, 20), (255, 0, 0)), Image.new("RGB", (20, 20), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    pixel = decode_image(data).getpixel((0, 0))
    assert isinstance(pixel, tuple)
    red, _, blue = pixel
    assert red > 200 and blue < 50


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` (no real pixel data): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a recognized image"),
        (encode(gradient(64, 64), "JPEG")[:300], "corrupt or truncated"),
        (encode(gradient(1, 1), "PNG"), "at least 16"),
        (png_header_only(30000, 30000), "decompression bomb"),
        (png_header_only(200000, 200000), "decompression bomb"),
    ],
    ids=["empty", "not-image", "truncated", "1x1", "30000x30000", "huge"],
)
def test_bad_bytes_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        decode_image(data)


def test_size_limit_in_bytes() -> None:
    with pytest.raises(InvalidArgument, match="MiB"):
        decode_image(b"x" * 2048, ImageLimits(max_bytes=1024))
