"""Label-preserving augmentation of training pixels for ``t2i finetune --augment``.

Every transform keeps what a caption of the shapes world says true: the colours, the shapes and
how many of each.

- One of the eight symmetries of the square (rotations by 90° and flips): a flipped or turned
  triangle is still a triangle, and no pixel value changes.
- With probability ``RESCALE_P``, the picture shrinks by a factor in ``RESCALE`` and moves to a
  random place that keeps all of it in the frame; the border around it is the mean colour of the
  picture's own border (the background, in the shapes world).
- Brightness and contrast jitter (``BRIGHTNESS``, ``CONTRAST``), the same for the three channels,
  so that hues keep their names.

The batch is transformed as one tensor on its device (a few grouped operations, no per-image
loop). What each image gets is drawn from a ``numpy`` ``Generator``, so a seed gives the same
pixels on every machine and after a resume.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from inference.images import PreprocessConfig

RESCALE = (0.75, 1.0)
RESCALE_P = 0.5
BRIGHTNESS = 0.1  # added, in [-0.1, 0.1], to pixels in [0, 1]
CONTRAST = (0.8, 1.2)  # factor around each image's mean


def symmetry(pixels: torch.Tensor, codes: np.ndarray) -> torch.Tensor:
    """Image ``i`` of ``[batch, channels, side, side]`` turned by ``codes[i] % 4`` quarter turns, mirrored first when ``codes[i] >= 4``."""
    out = pixels.clone()
    for code in np.unique(codes):
        rows = torch.from_numpy(np.flatnonzero(codes == code)).to(pixels.device)
        part = pixels[rows].flip(-1) if code >= 4 else pixels[rows]
        out[rows] = torch.rot90(part, int(code) % 4, dims=(-2, -1))
    return out


def rescale(unit: torch.Tensor, scales: np.ndarray, centres: np.ndarray) -> torch.Tensor:
    """Each image of ``unit`` shrunk by ``scales[i]`` around ``centres[i]`` (in [-1, 1], at most ``1 - scale`` from 0), the rest its border's mean colour."""
    border = torch.cat([unit[..., 0, :], unit[..., -1, :], unit[..., :, 0], unit[..., :, -1]], dim=-1)
    fill = border.mean(dim=-1)[..., None, None]  # [batch, channels, 1, 1]
    scale = torch.as_tensor(scales, dtype=unit.dtype, device=unit.device)
    centre = torch.as_tensor(centres, dtype=unit.dtype, device=unit.device)
    theta = torch.zeros(len(unit), 2, 3, dtype=unit.dtype, device=unit.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = -centre / scale[:, None]
    grid = nn.functional.affine_grid(theta, list(unit.shape), align_corners=False)
    return nn.functional.grid_sample(unit - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def jitter(unit: torch.Tensor, brightness: np.ndarray, contrast: np.ndarray) -> torch.Tensor:
    """``unit`` (pixels in [0, 1]) with each image's contrast scaled around its mean and ``brightness`` added, clipped to [0, 1]."""
    shift = torch.as_tensor(brightness, dtype=unit.dtype, device=unit.device)[:, None, None, None]
    factor = torch.as_tensor(contrast, dtype=unit.dtype, device=unit.device)[:, None, None, None]
    mean = unit.mean(dim=(1, 2, 3), keepdim=True)
    return ((unit - mean) * factor + mean + shift).clamp(0, 1)


def augment(pixels: torch.Tensor, rng: np.random.Generator, config: PreprocessConfig) -> torch.Tensor:
    """A batch of normalized pixel values (``[batch, 3, side, side]``, as ``load_pixels`` makes them), augmented (see the module docstring)."""
    count = len(pixels)
    codes = rng.integers(8, size=count)
    shrink = rng.random(count) < RESCALE_P
    scales = np.where(shrink, rng.uniform(*RESCALE, size=count), 1.0)
    centres = rng.uniform(-1, 1, size=(count, 2)) * (1 - scales)[:, None]
    brightness = rng.uniform(-BRIGHTNESS, BRIGHTNESS, size=count)
    contrast = rng.uniform(*CONTRAST, size=count)
    mean = torch.tensor(config.mean, dtype=pixels.dtype, device=pixels.device)[:, None, None]
    std = torch.tensor(config.std, dtype=pixels.dtype, device=pixels.device)[:, None, None]
    unit = symmetry(pixels, codes) * std + mean
    if shrink.any():
        rows = torch.from_numpy(np.flatnonzero(shrink)).to(pixels.device)
        unit[rows] = rescale(unit[rows], scales[shrink], centres[shrink])
    return (jitter(unit, brightness, contrast) - mean) / std
