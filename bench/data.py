"""Benchmark data: clustered unit vectors (embedding-like) and photo-like JPEG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def clustered_vectors(count: int, dim: int, seed: int = 0, clusters: int = 1000, spread: float = 0.6) -> np.ndarray:
    """Unit vectors drawn around ``clusters`` random centres, like embeddings of a photo collection.

    Uniform random vectors have no neighbourhood structure (every point is about equally far from
    every other), which no approximate index can rank; real CLIP embeddings are clustered.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 50_000):
        size = min(50_000, count - start)
        chunk = centres[rng.integers(0, clusters, size)] + spread * rng.standard_normal((size, dim)).astype(np.float32) / np.sqrt(dim)
        out[start : start + size] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def query_vectors(base: np.ndarray, count: int, seed: int = 1, noise: float = 0.4) -> np.ndarray:
    """Queries near stored vectors (a stored vector plus noise), normalized."""
    rng = np.random.default_rng(seed)
    picked = base[rng.choice(len(base), count, replace=False)]
    queries = picked + noise * rng.standard_normal(picked.shape).astype(np.float32) / np.sqrt(base.shape[1])
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Indices of the exact top-k by cosine (brute force)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 64):
        scores = queries[start : start + 64] @ base.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        out[start : start + 64] = np.take_along_axis(top, order, axis=1)
    return out


def photo_like_jpegs(folder: Path, count: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[Path]:
    """``count`` photo-like 640×480 JPEGs (gradients, shapes, texture, blur), generated once and reused."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) >= count:
        return existing[:count]
    rng = np.random.default_rng(seed)
    width, height = size
    ys = np.mgrid[0:height, 0:width][0].astype(np.float32)
    for i in range(count):
        path = folder / f"photo_{i:05d}.jpg"
        if path.exists():
            continue
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        mix = (ys / height)[..., None]
        sky = (top * (1 - mix) + bottom * mix + rng.normal(0, 6, (height, width, 3))).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(sky, "RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
            x1, y1 = x0 + int(rng.integers(20, 260)), y0 + int(rng.integers(20, 200))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.0))))
        image.save(path, quality=88)
    return sorted(folder.glob("*.jpg"))[:count]
