"""``t2i dataset shapes``: a labelled synthetic set of coloured shapes, for search whose rankings mean something offline.

Each image is 64×64 and shows either one kind of shape in a count of one to three ("two red
circles") or two kinds, one of each, in different colours and shapes ("a red circle and a blue
square": colour bound to the right object). Sizes, positions and the background (light or dark,
with jitter) vary. The generator writes, under ``out``:

- ``images/<labels...>/<name>.png``: the folders above an image are its labels for the reindex
  job (``red-circle``, ``count-2``, ``blue-square``), so label filters work on them;
- ``captions.csv``: ``file,caption``, two captions per image, the fine-tuning format;
- ``labels.csv``: the attributes of every image (``file,color,shape,count,color2,shape2,count2,background,size``);
- ``queries.jsonl``: queries with relevance computed from the labels, of three classes: ``shape``
  ("a red circle": any image with one), ``count`` ("two red circles": exactly two, and nothing
  else) and ``binding`` ("a red circle and a blue square": exactly that pair).

``held_out=True`` (for a training set) leaves out a fixed quarter of the pairs, so that an
evaluation set drawn with another seed measures them as unseen combinations; their queries carry
``"held_out": true``. Everything follows from ``seed`` and ``count``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {"red": (215, 35, 35), "green": (30, 165, 55), "blue": (40, 75, 225), "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
SIZE = 64
SCALE = 4  # drawn at 4× and downsampled: smooth edges


@dataclass(frozen=True)
class Shape:
    """One drawn object: its colour and shape names, centre and radius in pixels."""

    color: str
    shape: str
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class Scene:
    """What one image shows: its objects and its background."""

    objects: tuple[Shape, ...]
    background: str
    background_rgb: tuple[int, int, int]

    def kinds(self) -> dict[tuple[str, str], int]:
        """``(color, shape)`` → how many of it."""
        found: dict[tuple[str, str], int] = {}
        for obj in self.objects:
            found[(obj.color, obj.shape)] = found.get((obj.color, obj.shape), 0) + 1
        return found


def kind_label(color: str, shape: str) -> str:
    """The label (and folder name) of a kind of object: ``red-circle``."""
    return f"{color}-{shape}"


def noun(shape: str, count: int) -> str:
    """``circle`` or ``circles``."""
    return shape if count == 1 else f"{shape}s"


def phrase(color: str, shape: str, count: int) -> str:
    """``a red circle`` or ``two red circles``."""
    return f"a {color} {shape}" if count == 1 else f"{COUNT_WORDS[count]} {color} {noun(shape, count)}"


@functools.cache
def all_pairs() -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """Every pair of kinds a two-kind scene can show, in a canonical order (by shape, then colour)."""
    pairs = []
    for s1, s2 in ((a, b) for a in SHAPES for b in SHAPES if SHAPES.index(a) < SHAPES.index(b)):
        for c1, c2 in permutations(COLORS, 2):
            pairs.append(((c1, s1), (c2, s2)))
    return pairs


def is_held_out(pair: tuple[tuple[str, str], tuple[str, str]]) -> bool:
    """A fixed quarter of the pairs, left out of training sets (``held_out=True``)."""
    return all_pairs().index(pair) % 4 == 3


def _place(rng: np.random.Generator, radii: list[float]) -> list[tuple[float, float]] | None:
    centres: list[tuple[float, float]] = []
    for radius in radii:
        for _ in range(200):
            x, y = rng.uniform(radius + 2, SIZE - radius - 2, size=2)
            if all(math.hypot(x - cx, y - cy) > radius + other + 3 for (cx, cy), other in zip(centres, radii, strict=False)):
                centres.append((float(x), float(y)))
                break
        else:
            return None
    return centres


def draw_scene(rng: np.random.Generator, kinds: list[tuple[str, str, int]]) -> Scene:
    """A scene with ``count`` objects of each ``(color, shape, count)``, placed without overlap."""
    while True:
        flat = [(color, shape) for color, shape, count in kinds for _ in range(count)]
        radii = [float(rng.uniform(6.0, 10.0)) for _ in flat]
        centres = _place(rng, radii)
        if centres is not None:
            break
    dark = bool(rng.random() < 0.5)
    level = int(rng.integers(15, 60)) if dark else int(rng.integers(195, 245))
    tint = rng.integers(-12, 13, size=3)
    background = tuple(int(np.clip(level + t, 0, 255)) for t in tint)
    objects = tuple(Shape(c, s, x, y, r) for (c, s), (x, y), r in zip(flat, centres, radii, strict=True))
    return Scene(objects, "dark" if dark else "light", background)  # type: ignore[arg-type]


def render(scene: Scene) -> Image.Image:
    """Draw ``scene`` as a 64×64 RGB image."""
    big = Image.new("RGB", (SIZE * SCALE, SIZE * SCALE), scene.background_rgb)
    pen = ImageDraw.Draw(big)
    for obj in scene.objects:
        x, y, r, fill = obj.x * SCALE, obj.y * SCALE, obj.radius * SCALE, COLORS[obj.color]
        if obj.shape == "circle":
            pen.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        elif obj.shape == "square":
            half = r * 0.8
            pen.rectangle((x - half, y - half, x + half, y + half), fill=fill)
        else:
            pen.polygon([(x, y - r), (x - r * 0.87, y + r * 0.5), (x + r * 0.87, y + r * 0.5)], fill=fill)
    return big.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def captions(scene: Scene) -> list[str]:
    """Two captions: the plain phrase and ``a photo of`` it (pairs: both orders)."""
    kinds = sorted(scene.kinds().items(), key=lambda item: (SHAPES.index(item[0][1]), item[0][0]))
    if len(kinds) == 1:
        (color, shape), count = kinds[0]
        return [phrase(color, shape, count), f"a photo of {phrase(color, shape, count)}"]
    first, second = (phrase(c, s, n) for (c, s), n in kinds)
    return [f"{first} and {second}", f"{second} and {first}"]


def scene_plan(rng: np.random.Generator, count: int, held_out: bool) -> Iterator[list[tuple[str, str, int]]]:
    """``count`` scene descriptions, alternating one kind (1–3 of it) and a pair of kinds.

    Each goes round its own shuffled list, so every single kind and count, and every pair, is
    drawn equally often: every query of a large enough set has about as many relevant images.
    """
    singles = [[(color, shape, n)] for color in COLORS for shape in SHAPES for n in COUNT_WORDS]
    pairs = [[(c1, s1, 1), (c2, s2, 1)] for (c1, s1), (c2, s2) in all_pairs() if not (held_out and is_held_out(((c1, s1), (c2, s2))))]
    order = {0: rng.permutation(len(singles)), 1: rng.permutation(len(pairs))}
    for n in range(count):
        kind, turn = n % 2, n // 2
        choices = singles if kind == 0 else pairs
        if turn and turn % len(choices) == 0:
            order[kind] = rng.permutation(len(choices))
        yield choices[int(order[kind][turn % len(choices)])]


def relative_path(scene: Scene, index: int) -> str:
    """``red-circle/count-2/shapes-00012.png`` or ``blue-square/red-circle/shapes-00013.png``: labels as folders."""
    kinds = scene.kinds()
    folders = sorted(kind_label(c, s) for c, s in kinds)
    if len(kinds) == 1:
        folders.append(f"count-{next(iter(kinds.values()))}")
    return "/".join([*folders, f"shapes-{index:05d}.png"])


LABEL_FIELDS = ("file", "color", "shape", "count", "color2", "shape2", "count2", "background", "size")


def label_row(file: str, scene: Scene) -> dict[str, object]:
    """One ``labels.csv`` row."""
    kinds = sorted(scene.kinds().items(), key=lambda item: (SHAPES.index(item[0][1]), item[0][0]))
    (color, shape), count = kinds[0]
    second = kinds[1] if len(kinds) > 1 else (("", ""), 0)
    size = round(sum(o.radius for o in scene.objects) / len(scene.objects), 1)
    return {
        "file": file, "color": color, "shape": shape, "count": count,
        "color2": second[0][0], "shape2": second[0][1], "count2": second[1], "background": scene.background, "size": size,
    }  # fmt: skip


def read_labels(path: Path) -> list[dict[str, str]]:
    """The rows of a ``labels.csv``."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _kinds_of(row: dict[str, str]) -> dict[tuple[str, str], int]:
    kinds = {(row["color"], row["shape"]): int(row["count"])}
    if row.get("shape2"):
        kinds[(row["color2"], row["shape2"])] = int(row["count2"])
    return kinds


def make_queries(rows: list[dict[str, str]]) -> list[dict[str, object]]:
    """Queries with relevance computed from the labels; only queries with at least one relevant image."""
    kinds = {row["file"]: _kinds_of(row) for row in rows}
    queries: list[dict[str, object]] = []

    def add(text: str, kind: str, relevant: list[str], **extra: object) -> None:
        if relevant:
            queries.append({"query": text, "relevant": sorted(relevant), "class": kind, **extra})

    for color in COLORS:
        for shape in SHAPES:
            add(phrase(color, shape, 1), "shape", [f for f, k in kinds.items() if (color, shape) in k])
    for color in COLORS:
        for shape in SHAPES:
            for count in (2, 3):
                add(phrase(color, shape, count), "count", [f for f, k in kinds.items() if k == {(color, shape): count}])
    for pair in all_pairs():
        (c1, s1), (c2, s2) = pair
        wanted = {(c1, s1): 1, (c2, s2): 1}
        add(f"{phrase(c1, s1, 1)} and {phrase(c2, s2, 1)}", "binding", [f for f, k in kinds.items() if k == wanted], held_out=is_held_out(pair))
    return queries


def generate(out: Path, count: int, seed: int, held_out: bool = False) -> dict[str, int]:
    """Write the dataset into ``out`` (see the module docstring); returns counts of what was written.

    Raises:
        ValueError: ``count`` is below 2.
    """
    if count < 2:
        raise ValueError(f"--count must be at least 2, not {count}")
    rng = np.random.default_rng(seed)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    label_rows, caption_rows = [], []
    for index, kinds in enumerate(scene_plan(rng, count, held_out)):
        scene = draw_scene(rng, kinds)
        file = relative_path(scene, index)
        (images / file).parent.mkdir(parents=True, exist_ok=True)
        render(scene).save(images / file, format="PNG")
        label_rows.append(label_row(file, scene))
        caption_rows += [{"file": file, "caption": text} for text in captions(scene)]
    with (out / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LABEL_FIELDS)
        writer.writeheader()
        writer.writerows(label_rows)
    with (out / "captions.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("file", "caption"))
        writer.writeheader()
        writer.writerows(caption_rows)
    queries = make_queries(read_labels(out / "labels.csv"))
    (out / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    return {"images": count, "captions": len(caption_rows), "queries": len(queries)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``t2i dataset shapes``."""
    parser.add_argument("out", type=Path, help="folder to write images/, captions.csv, labels.csv and queries.jsonl into")
    parser.add_argument("--count", type=int, default=1000, help="number of images (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; use different seeds for training and evaluation sets")
    parser.add_argument("--held-out", action="store_true", help="leave a fixed quarter of the shape pairs out (for training sets)")


def command(args: argparse.Namespace) -> int:
    """Run ``t2i dataset shapes``."""
    written = generate(args.out, args.count, args.seed, args.held_out)
    print(f"wrote {written['images']} images, {written['captions']} captions and {written['queries']} queries to {args.out}")
    return 0
