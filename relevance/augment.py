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

import functools

import numpy as np
import torch
from torch import nn

from inference.images import PreprocessConfig

RESCALE = (0.75, 1.0)
RESCALE_P = 0.5
BRIGHTNESS = 0.1  # added, in [-0.1, 0.1], to pixels in [0, 1]
CONTRAST = (0.8, 1.2)  # factor around each image's mean


@functools.lru_cache(maxsize=8)
def _symmetry_maps(side: int) -> torch.Tensor:
    """``[8, side * side]``: where each pixel of a ``side`` × ``side`` picture comes from, under each of the eight symmetries."""
    grid = torch.arange(side * side).view(side, side)
    return torch.stack([torch.rot90(grid.flip(-1) if code >= 4 else grid, code % 4).flatten() for code in range(8)])


def symmetry(pixels: torch.Tensor, codes: np.ndarray) -> torch.Tensor:
    """Image ``i`` of ``[batch, channels, side, side]`` turned by ``codes[i] % 4`` quarter turns, mirrored first when ``codes[i] >= 4``."""
    batch, channels, side, _ = pixels.shape
    index = _symmetry_maps(side).to(pixels.device)[torch.from_numpy(codes).to(pixels.device)]
    return pixels.flatten(2).gather(2, index[:, None, :].expand(batch, channels, -1)).view_as(pixels)


def rescale(pixels: torch.Tensor, scales: np.ndarray, centres: np.ndarray) -> torch.Tensor:
    """Each image shrunk by ``scales[i]`` around ``centres[i]`` (in [-1, 1], at most ``1 - scale`` from 0), the rest its border's mean colour.

    Linear in the pixel values, so it works on normalized pixels as on pixels in [0, 1].
    """
    border = torch.cat([pixels[..., 0, :], pixels[..., -1, :], pixels[..., :, 0], pixels[..., :, -1]], dim=-1)
    fill = border.mean(dim=-1)[..., None, None]  # [batch, channels, 1, 1]
    scale = torch.as_tensor(scales, dtype=pixels.dtype, device=pixels.device)
    centre = torch.as_tensor(centres, dtype=pixels.dtype, device=pixels.device)
    theta = torch.zeros(len(pixels), 2, 3, dtype=pixels.dtype, device=pixels.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = -centre / scale[:, None]
    grid = nn.functional.affine_grid(theta, list(pixels.shape), align_corners=False)
    return nn.functional.grid_sample(pixels - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def jitter(pixels: torch.Tensor, brightness: np.ndarray, contrast: np.ndarray, config: PreprocessConfig) -> torch.Tensor:
    """Normalized ``pixels`` whose values in [0, 1] ``x`` become ``(x - mean) * contrast + mean + brightness`` (``mean``: the image's), clipped to [0, 1].

    Computed on the normalized values directly: one multiply-add and one clip.
    """
    mean = torch.tensor(config.mean, dtype=pixels.dtype, device=pixels.device)[None, :, None, None]
    std = torch.tensor(config.std, dtype=pixels.dtype, device=pixels.device)[None, :, None, None]
    shift = torch.as_tensor(brightness, dtype=pixels.dtype, device=pixels.device)[:, None, None, None]
    factor = torch.as_tensor(contrast, dtype=pixels.dtype, device=pixels.device)[:, None, None, None]
    level = (pixels.mean(dim=(2, 3), keepdim=True) * std + mean).mean(dim=1, keepdim=True)  # each image's mean in [0, 1]
    offset = ((mean - level) * factor + level + shift - mean) / std
    return torch.clamp(torch.addcmul(offset, pixels, factor), min=-mean / std, max=(1 - mean) / std)


def augment(pixels: torch.Tensor, rng: np.random.Generator, config: PreprocessConfig) -> torch.Tensor:
    """A batch of normalized pixel values (``[batch, 3, side, side]``, as ``load_pixels`` makes them), augmented (see the module docstring)."""
    count = len(pixels)
    codes = rng.integers(8, size=count)
    shrink = rng.random(count) < RESCALE_P
    scales = np.where(shrink, rng.uniform(*RESCALE, size=count), 1.0)
    centres = rng.uniform(-1, 1, size=(count, 2)) * (1 - scales)[:, None]
    brightness = rng.uniform(-BRIGHTNESS, BRIGHTNESS, size=count)
    contrast = rng.uniform(*CONTRAST, size=count)
    turned = symmetry(pixels, codes)
    if shrink.any():
        rows = torch.from_numpy(np.flatnonzero(shrink)).to(pixels.device)
        turned[rows] = rescale(turned[rows], scales[shrink], centres[shrink])
    return jitter(turned, brightness, contrast, config)
