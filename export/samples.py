"""Real sample photos that ship with scikit-image, for demos, parity checks and tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# Colour and greyscale photos of distinct subjects in several formats.
SAMPLE_NAMES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "horse.png",
    "motorcycle_left.png",
    "rocket.jpg",
    "grass.png",
    "camera.png",
    "coins.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "brick.png",
    "gravel.png",
    "moon.png",
    "page.png",
    "logo.png",
    "ihc.png",
    "cell.png",
    "text.png",
    "color.png",
)


def sample_dir() -> Path:
    """The ``skimage/data`` folder.

    Raises:
        FileNotFoundError: when scikit-image is not installed.
    """
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-image is not installed; it ships the sample photos ('make install')")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sample_photos(limit: int | None = None) -> list[Path]:
    """Paths of the sample photos that exist in this scikit-image install."""
    folder = sample_dir()
    paths = [folder / name for name in SAMPLE_NAMES if (folder / name).is_file()]
    return paths[:limit] if limit else paths
