"""Image decoding and CLIP preprocessing.

``decode_image`` turns untrusted bytes into an RGB ``PIL.Image`` or raises ``InvalidArgument``
with a reason a person can act on. ``preprocess`` reproduces ``transformers.CLIPImageProcessor``
exactly (shortest-edge bicubic resize, center crop, rescale, normalize) for an RGB image.
"""

from __future__ import annotations

import datetime
import functools
import io
import json
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from core.errors import InvalidArgument
from core.records import ImageMetadata

if TYPE_CHECKING:  # not imported at run time: the reindex job's spawned decode workers import this module, and pydantic-settings takes a second
    from core.settings import Settings

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "MPO"})
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MIN_SIDE = 16
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
# What Pillow raises for bytes that are not a usable image (a broken header, truncated data). Anything
# else out of the decoder is a ``DecoderFailure``: maybe a decoder bug, not the file's fault.
BAD_DATA_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


class DecoderFailure(InvalidArgument):
    """The decoder raised an unexpected exception: the bytes may be fine (clients still get INVALID_ARGUMENT).

    The reindex job counts such a file as failed and keeps its row, rather than rejecting it.
    """


@dataclass(frozen=True)
class ImageLimits:
    """What ``decode_image`` accepts.

    Attributes:
        max_pixels: Largest width × height (decompression-bomb guard).
        min_side: Smallest width or height in pixels.
        max_bytes: Largest encoded size.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        """The limits ``settings`` set (``T2I_MAX_IMAGE_PIXELS``, ``T2I_MIN_IMAGE_SIDE``, ``T2I_MAX_MESSAGE_MB``)."""
        return cls(max_pixels=settings.max_image_pixels, min_side=settings.min_image_side, max_bytes=settings.max_message_mb * 2**20)


@dataclass(frozen=True)
class PreprocessConfig:
    """The subset of ``preprocessor_config.json`` that CLIP uses."""

    shortest_edge: int = 224
    crop_size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    resample: int = int(Image.Resampling.BICUBIC)

    @classmethod
    def from_file(cls, path: Path) -> PreprocessConfig:
        """Read a Hugging Face ``preprocessor_config.json``."""
        raw = json.loads(Path(path).read_text())
        size = raw.get("size", 224)
        crop = raw.get("crop_size", 224)
        return cls(
            shortest_edge=int(size["shortest_edge"] if isinstance(size, dict) else size),
            crop_size=int(crop["height"] if isinstance(crop, dict) else crop),
            mean=tuple(raw.get("image_mean", cls.mean)),
            std=tuple(raw.get("image_std", cls.std)),
            resample=int(raw.get("resample", cls.resample)),
        )


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Decode untrusted image bytes to an upright RGB image (``decode_with_metadata`` without the metadata)."""
    return decode_with_metadata(data, limits)[0]


EXIF_DATE_TIME_ORIGINAL, EXIF_DATE_TIME = 36867, 306


def exif_time(raw: object) -> int | None:
    """An EXIF date-time (``YYYY:MM:DD HH:MM:SS``, read as UTC) in microseconds since the epoch; None when it is not one."""
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S").replace(tzinfo=datetime.UTC)
    except ValueError:  # "0000:00:00 00:00:00", blanks, another layout: unknown
        return None
    return (parsed - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)) // datetime.timedelta(microseconds=1)


def capture_time(image: Image.Image) -> int | None:
    """The EXIF DateTimeOriginal (in the Exif IFD, or IFD0), else DateTime, of an opened image, read as UTC; None without one.

    Malformed EXIF is no error: the time is then unknown.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns of corrupt EXIF: the time is unknown then, which is no news for the log
            exif = image.getexif()
            candidates = [exif.get_ifd(ExifTags.IFD.Exif).get(EXIF_DATE_TIME_ORIGINAL), exif.get(EXIF_DATE_TIME_ORIGINAL), exif.get(EXIF_DATE_TIME)]
    except Exception:  # noqa: BLE001 - broken EXIF of an otherwise good image: no capture time
        return None
    return next((found for found in map(exif_time, candidates) if found is not None), None)


def metadata_format(image_format: str | None) -> str:
    """The format name ImageMetadata records: Pillow's, with MPO (a JPEG with more pictures after the first) as JPEG."""
    return "JPEG" if image_format == "MPO" else str(image_format or "")


def decode_with_metadata(data: bytes, limits: ImageLimits = ImageLimits()) -> tuple[Image.Image, ImageMetadata]:
    """Decode untrusted image bytes to an upright RGB image, and what was read on the way (one decode).

    The metadata's width and height are the upright image's (EXIF orientation applied), bytes
    ``len(data)``, the format Pillow's name (``metadata_format``) and the capture time the EXIF's
    (``capture_time``); the modification time is the caller's to set.

    Applies EXIF orientation, takes the first frame of animations, composites transparency onto
    white, and maps 16-bit and CMYK images to 8-bit RGB.

    Raises:
        InvalidArgument: empty, too large, not an image, unsupported format, too small, too many
            pixels, or corrupt/truncated data.
        DecoderFailure: the decoder raised anything else (an ``InvalidArgument`` too).
    """
    if not data:
        raise InvalidArgument("image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidArgument(f"image is {len(data) / 2**20:.1f} MiB; the limit is {limits.max_bytes / 2**20:.0f} MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise InvalidArgument("data is not a recognized image (expected JPEG, PNG, BMP, GIF, TIFF or WebP)") from exc
        raise InvalidArgument(f"image has too many pixels (decompression bomb guard): {exc}") from exc
    except BAD_DATA_ERRORS as exc:
        raise InvalidArgument(f"image data is corrupt or truncated: {exc}") from exc
    except Exception as exc:
        raise DecoderFailure(f"the image decoder failed unexpectedly ({type(exc).__name__}: {exc})") from exc
    if image.format not in SUPPORTED_FORMATS:
        raise InvalidArgument(f"image format {image.format} is not supported (JPEG, PNG, BMP, GIF, TIFF, WebP)")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise InvalidArgument(
            f"image is {width}x{height} = {width * height / 1e6:.0f} MP; the limit is {limits.max_pixels / 1e6:.0f} MP (decompression bomb guard)"
        )
    if min(width, height) < limits.min_side:
        raise InvalidArgument(f"image is {width}x{height} pixels; each side must be at least {limits.min_side}")
    try:
        image.seek(0)
        image.load()
        captured = capture_time(image)
        upright: Image.Image = ImageOps.exif_transpose(image) or image
        return to_rgb(upright), ImageMetadata(upright.width, upright.height, len(data), metadata_format(image.format), None, captured)
    except BAD_DATA_ERRORS as exc:
        raise InvalidArgument(f"image data is corrupt or truncated: {exc}") from exc
    except Exception as exc:
        raise DecoderFailure(f"the image decoder failed unexpectedly ({type(exc).__name__}: {exc})") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha composited on white, 16-bit scaled down)."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_shape(width: int, height: int, shortest_edge: int) -> tuple[int, int]:
    """Output ``(width, height)`` of CLIP's shortest-edge resize (``default_to_square=False``)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = shortest_edge, int(shortest_edge * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def crop_pixels(image: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """CLIP's shortest-edge resize and center crop of one RGB image: ``uint8 [crop, crop, 3]``.

    A quarter of the bytes of the float32 result, so process pools send this and ``normalize``
    runs where the batch is assembled.
    """
    resized = image.resize(resize_shape(*image.size, config.shortest_edge), resample=config.resample)
    pixels = np.asarray(resized)
    height, width = pixels.shape[:2]
    crop = config.crop_size
    if height < crop or width < crop:
        padded = np.zeros((max(height, crop), max(width, crop), 3), dtype=pixels.dtype)
        top, left = (padded.shape[0] - height) // 2, (padded.shape[1] - width) // 2
        padded[top : top + height, left : left + width] = pixels
        pixels, height, width = padded, padded.shape[0], padded.shape[1]
    top, left = (height - crop) // 2, (width - crop) // 2
    return np.ascontiguousarray(pixels[top : top + crop, left : left + crop])


@functools.lru_cache(maxsize=8)
def _normalize_table(config: PreprocessConfig) -> np.ndarray:
    """float32 ``[3, 256]``: what each uint8 value becomes in each channel (same arithmetic as per pixel)."""
    scaled = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(config.mean, dtype=np.float32)[:, None]
    std = np.asarray(config.std, dtype=np.float32)[:, None]
    return (scaled[None, :] - mean) / std


def normalize(crops: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """``uint8 [..., crop, crop, 3]`` crops to contiguous float32 ``[..., 3, crop, crop]`` (rescale, normalize).

    A table lookup per channel: bit-identical to rescaling and normalizing each pixel, and several
    times cheaper for a batch.
    """
    table = _normalize_table(config)
    out = np.empty((*crops.shape[:-3], 3, *crops.shape[-3:-1]), dtype=np.float32)
    for channel in range(3):
        np.take(table[channel], crops[..., channel], out=out[..., channel, :, :])
    return out


def preprocess_one(image: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """One RGB image to a float32 ``[3, crop, crop]`` array, as ``CLIPImageProcessor`` does."""
    return normalize(crop_pixels(image, config), config)


def preprocess(images: list[Image.Image], config: PreprocessConfig) -> np.ndarray:
    """A batch of RGB images to float32 ``pixel_values`` ``[batch, 3, crop, crop]``."""
    return np.stack([preprocess_one(image, config) for image in images])


def load_pixels(data: bytes, config: PreprocessConfig, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Decode and preprocess one encoded image to float32 ``[3, crop, crop]``."""
    return preprocess_one(decode_image(data, limits), config)


def load_crop(data: bytes, config: PreprocessConfig, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Decode, resize and crop one encoded image to ``uint8 [crop, crop, 3]`` (for process pools; ``normalize`` after)."""
    return crop_pixels(decode_image(data, limits), config)


def load_pixels_with_metadata(data: bytes, config: PreprocessConfig, limits: ImageLimits = ImageLimits()) -> tuple[np.ndarray, ImageMetadata]:
    """``load_pixels`` and the image's metadata, from one decode."""
    image, metadata = decode_with_metadata(data, limits)
    return preprocess_one(image, config), metadata


def load_crop_with_metadata(data: bytes, config: PreprocessConfig, limits: ImageLimits = ImageLimits()) -> tuple[np.ndarray, ImageMetadata]:
    """``load_crop`` and the image's metadata, from one decode."""
    image, metadata = decode_with_metadata(data, limits)
    return crop_pixels(image, config), metadata
