"""``t2i dataset shapes``: a labelled synthetic set of coloured shapes, for search whose rankings mean something offline.

Each image shows either one kind of shape in a count of one to three ("two red circles") or two
kinds, one of each, in different colours and shapes ("a red circle and a blue square": colour bound
to the right object). Every style shares the scene plan (which kinds, how many), the object radii
(6–10 px of a 64-px scene, scaled with the image), placement without overlap, and the background
level (light: grey 195–244, or dark: 15–59, either way each channel tinted by −12…+12). The generator
writes, under ``out``:

- ``images/<labels...>/<name>.png`` (``.jpg`` for JPEG): the folders above an image are its labels
  for the reindex job (``red-circle``, ``count-2``, ``blue-square``), so label filters work on them;
- ``captions.csv``: ``file,caption``, two captions per image, the fine-tuning format;
- ``labels.csv``: the attributes of every image (``file,color,shape,count,color2,shape2,count2,background,size``;
  ``size``: the mean radius in px of the 64-px scene), then how it was drawn (``style,image_size,rotation,shade,texture,format,quality``: the rotation in
  degrees of each object in drawing order, each colour's RGB, the JPEG quality or 0);
- ``queries.jsonl``: queries with relevance computed from the labels, of three classes: ``shape``
  ("a red circle": any image with one), ``count`` ("two red circles": exactly two, and nothing
  else) and ``binding`` ("a red circle and a blue square": exactly that pair).

Styles (``style=``, ``--style``), exactly (``STYLES``; lengths below are in px of a 64-px scene):

- ``plain`` (the default: the original generator; the same images, captions and queries byte for
  byte, and the same label columns before the new ones): 64×64 PNG; no rotation; the base colours
  exactly (``COLORS``); a flat background.
- ``wide`` (for training): side 56, 64, 72 or 80 px (the scene scaled); each square and triangle
  rotated by a uniform angle in −25°…+25° (circles are not rotated); each colour of an image one
  shade, the base colour with every channel moved by an integer in −25…+25 (so at most 25 from it
  per channel); background flat, or textured with a grey pattern of one of ``hstripes``,
  ``vstripes`` (sine stripes, amplitude 8–18 grey levels, period 8–16 px) or ``gradient`` (linear,
  12–30 levels from the centre to the middle of an edge, any direction), each of the four with
  probability 1/4; PNG or JPEG (quality 85–95), half each.
- ``shifted`` (for evaluation only: every setting below is one that ``plain`` and ``wide`` never
  draw): side 48, 96 or 112 px; each square and triangle rotated by 30°–60° either way (a square at
  45° is a diamond, a triangle at 60° points down), so, modulo the shapes' symmetry (90°, 120°),
  every angle is at least 30° from upright where wide's are within 25°; each colour darker (mixed
  toward black by 20–28 %) on a light background, lighter (toward white by 22–35 %) on a dark one,
  which moves some channel by 33 or more, outside wide's ±25 (``shade_range``; the ``shade``
  column shows each); background always textured, with ``checker`` (a checkerboard, ±8–18
  levels, cells 6–12 px), ``speckle`` (grey noise per pixel, standard deviation 6–14 levels) or
  ``dstripes`` (diagonal sine stripes at ±45°, amplitude 8–18, period 8–16 px); always JPEG,
  quality 55–75 (JPEG is Pillow's, with 4:2:0 chroma subsampling, in both styles).

Textures are grey, so they never add colour. Captions (``captions=``, ``--captions``): ``full``
(the default) states counts and pairs ("two red circles", "a photo of two red circles"; "a red
circle and a blue square" in both orders); ``base`` names what is in the picture without binding or
counting it, the way web captions teach CLIP: its colours then its shapes, each once, in a random
order ("red, blue, circle, square"), and one of its objects alone ("a red circle"). Queries are the
same for both. ``true_of`` decides a caption of the full grammar against an image's labels.

``held_out=True`` (for a training set) leaves out a fixed quarter of the pairs, so that an
evaluation set drawn with another seed measures them as unseen combinations; their queries carry
``"held_out": true``. Everything follows from ``seed``, ``count``, the style and the caption mode;
a style other than ``plain`` draws its scenes from its own random stream, so that the same seed in
two styles never gives the same layouts.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import permutations
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {"red": (215, 35, 35), "green": (30, 165, 55), "blue": (40, 75, 225), "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
SIZE = 64
SCALE = 4  # drawn at 4× and downsampled: smooth edges
CAPTION_MODES = ("full", "base")
T = TypeVar("T")


@dataclass(frozen=True)
class Style:
    """How a style draws its images: the settings it picks from, per image (see the module docstring).

    Attributes:
        name: ``plain``, ``wide`` or ``shifted``.
        stream: the random stream of its scenes (0: ``default_rng(seed)``, the original generator).
        sizes: image sides in pixels.
        rotation: the range of an angle's magnitude in degrees, either sign, for squares and triangles.
        jitter: each channel of a shade moves by an integer in ``-jitter…jitter``.
        mix: how far a shade mixes toward black (a negative range, used on light backgrounds) or toward
            white (a positive one, used on dark backgrounds); none: the base colour.
        textures: background kinds (``none``: flat).
        formats: ``png`` or ``jpeg``.
        quality: the JPEG quality range, inclusive.
    """

    name: str
    stream: int
    sizes: tuple[int, ...] = (SIZE,)
    rotation: tuple[float, float] = (0.0, 0.0)
    jitter: int = 0
    mix: tuple[tuple[float, float], ...] = ()
    textures: tuple[str, ...] = ("none",)
    formats: tuple[str, ...] = ("png",)
    quality: tuple[int, int] = (0, 0)


STYLES: dict[str, Style] = {
    "plain": Style("plain", 0),
    "wide": Style("wide", 1, (56, 64, 72, 80), (0.0, 25.0), 25, (), ("none", "hstripes", "vstripes", "gradient"), ("png", "jpeg"), (85, 95)),
    "shifted": Style("shifted", 2, (48, 96, 112), (30.0, 60.0), 0, ((-0.28, -0.20), (0.22, 0.35)), ("checker", "speckle", "dstripes"), ("jpeg",), (55, 75)),
}  # fmt: skip
SYMMETRY = {"circle": 0.0, "square": 90.0, "triangle": 120.0}  # degrees after which a shape looks the same


@dataclass(frozen=True)
class Shape:
    """One drawn object: its colour and shape names, centre and radius in pixels of the 64-px scene, and its rotation."""

    color: str
    shape: str
    x: float
    y: float
    radius: float
    angle: float = 0.0


@dataclass(frozen=True)
class Look:
    """How one scene is drawn: the settings its style picked (``Look()``: the plain style)."""

    style: str = "plain"
    size: int = SIZE
    shades: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    texture: str = "none"
    params: tuple[float, ...] = ()
    format: str = "png"
    quality: int = 0


@dataclass(frozen=True)
class Scene:
    """What one image shows: its objects and its background, and how it is drawn."""

    objects: tuple[Shape, ...]
    background: str
    background_rgb: tuple[int, int, int]
    look: Look = field(default_factory=Look)

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
    """A scene with ``count`` objects of each ``(color, shape, count)``, placed without overlap (drawn plain)."""
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


def _pick(rng: np.random.Generator, options: tuple[T, ...]) -> T:
    """One of ``options``; draws nothing when there is only one (the plain style draws nothing at all)."""
    return options[0] if len(options) == 1 else options[int(rng.integers(len(options)))]


def _between(rng: np.random.Generator, low: float, high: float) -> float:
    return low if low == high else float(rng.uniform(low, high))


def shade(rng: np.random.Generator, style: Style, base: tuple[int, int, int], background: str) -> tuple[int, int, int]:
    """A shade of ``base`` as ``style`` draws it: mixed away from the ``light`` or ``dark`` background, then jittered per channel."""
    rgb = np.array(base, dtype=float)
    if style.mix:
        amount = _between(rng, *next(span for span in style.mix if (span[0] < 0) == (background == "light")))
        rgb += abs(amount) * ((255.0 if amount > 0 else 0.0) - rgb)
    if style.jitter:
        rgb += rng.integers(-style.jitter, style.jitter + 1, size=3)
    r, g, b = (int(v) for v in np.clip(np.rint(rgb), 0, 255))
    return r, g, b


def shade_range(style: Style) -> tuple[int, int]:
    """The least and the most a shade of ``style`` can differ from its base colour, in its most-changed channel."""
    if not style.mix:
        return 0, style.jitter
    moves = [abs(amount) * max(abs((255 if amount > 0 else 0) - v) for v in base) for base in COLORS.values() for span in style.mix for amount in span]
    return max(0, math.floor(min(moves)) - style.jitter), math.ceil(max(moves)) + style.jitter


def _texture_params(rng: np.random.Generator, texture: str) -> tuple[float, ...]:
    if texture in ("hstripes", "vstripes", "dstripes"):  # amplitude, period, phase, diagonal direction
        return (_between(rng, 8, 18), _between(rng, 8, 16), _between(rng, 0, 2 * math.pi), float(_pick(rng, (1, -1))))
    if texture == "gradient":  # amplitude, direction
        return (_between(rng, 12, 30), _between(rng, 0, 2 * math.pi))
    if texture == "checker":  # amplitude, cell, offsets
        return (_between(rng, 8, 18), _between(rng, 6, 12), _between(rng, 0, 12), _between(rng, 0, 12))
    if texture == "speckle":  # standard deviation, noise seed
        return (_between(rng, 6, 14), float(rng.integers(2**31)))
    return ()


def draw_look(rng: np.random.Generator, style: Style, scene: Scene) -> Scene:
    """``scene`` with its objects rotated and the settings ``style`` picks for it (none for ``plain``)."""
    size = _pick(rng, style.sizes)
    objects = tuple(Shape(o.color, o.shape, o.x, o.y, o.radius, _angle(rng, style) if SYMMETRY[o.shape] else 0.0) for o in scene.objects)
    shades = {color: shade(rng, style, COLORS[color], scene.background) for color in dict.fromkeys(o.color for o in scene.objects)}
    texture = _pick(rng, style.textures)
    params = _texture_params(rng, texture)
    image_format = _pick(rng, style.formats)
    quality = int(rng.integers(style.quality[0], style.quality[1] + 1)) if image_format == "jpeg" else 0
    look = Look(style.name, size, shades, texture, params, image_format, quality)
    return Scene(objects, scene.background, scene.background_rgb, look)


def _angle(rng: np.random.Generator, style: Style) -> float:
    low, high = style.rotation
    if high == 0:
        return 0.0
    return round(_between(rng, low, high) * (1 if rng.random() < 0.5 else -1), 1)


@functools.cache
def _grid(size: int) -> np.ndarray:
    return np.mgrid[0:size, 0:size].astype(np.float32) * np.float32(SIZE / size)


def texture_field(look: Look) -> np.ndarray:
    """The grey levels a textured background adds to its colour, ``size × size``."""
    yy, xx = _grid(look.size)
    p = look.params
    if look.texture in ("hstripes", "vstripes", "dstripes"):
        along = {"hstripes": yy, "vstripes": xx, "dstripes": (xx + p[3] * yy) / math.sqrt(2)}[look.texture]
        return p[0] * np.sin(2 * math.pi * along / p[1] + p[2])
    if look.texture == "gradient":
        return p[0] * ((xx - SIZE / 2) * math.cos(p[1]) + (yy - SIZE / 2) * math.sin(p[1])) / (SIZE / 2)
    if look.texture == "checker":
        return p[0] * ((((xx + p[2]) // p[1] + (yy + p[3]) // p[1]) % 2) * 2 - 1)
    if look.texture == "speckle":
        return np.random.default_rng(int(p[1])).normal(0.0, p[0], size=xx.shape).astype(np.float32)
    return np.zeros(xx.shape, dtype=np.float32)


def _outline(obj: Shape, k: float) -> list[tuple[float, float]] | None:
    """The polygon of a square or triangle scaled by ``k`` (the plain style's exact points), ``None`` for a circle."""
    x, y, r = obj.x * k, obj.y * k, obj.radius * k
    if obj.shape == "circle":
        return None
    half = r * 0.8
    if obj.shape == "square":
        points = [(x - half, y - half), (x + half, y - half), (x + half, y + half), (x - half, y + half)]
    else:
        points = [(x, y - r), (x - r * 0.87, y + r * 0.5), (x + r * 0.87, y + r * 0.5)]
    if not obj.angle:
        return points
    cos, sin = math.cos(math.radians(obj.angle)), math.sin(math.radians(obj.angle))
    return [(x + (px - x) * cos - (py - y) * sin, y + (px - x) * sin + (py - y) * cos) for px, py in points]


Pen = tuple[ImageDraw.ImageDraw, int | tuple[int, int, int] | None]  # a drawing and its fill (None: each object's shade)


def _draw_objects(pens: list[Pen], scene: Scene, k: float) -> None:
    """Each object with every pen: ``(pen, None)`` fills with the object's shade, ``(pen, fill)`` with ``fill``."""
    for obj in scene.objects:
        colour = scene.look.shades.get(obj.color, COLORS[obj.color])
        x, y, r = obj.x * k, obj.y * k, obj.radius * k
        points = _outline(obj, k)
        for pen, fill in pens:
            ink = colour if fill is None else fill
            if points is None:
                pen.ellipse((x - r, y - r, x + r, y + r), fill=ink)
            elif obj.shape == "square" and not obj.angle:
                pen.rectangle((points[0], points[2]), fill=ink)
            else:
                pen.polygon(points, fill=ink)


def render(scene: Scene) -> Image.Image:
    """Draw ``scene`` as a ``look.size``-square RGB image (64×64 for the plain style).

    Drawn at 4× and downsampled: with Lanczos onto a flat background (the plain style's way); on a
    textured one, the objects and their coverage are averaged over 4×4 boxes and laid over the texture.
    """
    size = scene.look.size
    k = size / SIZE * SCALE
    if scene.look.texture == "none":
        big = Image.new("RGB", (size * SCALE, size * SCALE), scene.background_rgb)
        _draw_objects([(ImageDraw.Draw(big), None)], scene, k)
        return big.resize((size, size), Image.Resampling.LANCZOS)
    ink, mask = Image.new("RGB", (size * SCALE,) * 2), Image.new("L", (size * SCALE,) * 2)
    _draw_objects([(ImageDraw.Draw(ink), None), (ImageDraw.Draw(mask), 255)], scene, k)
    alpha = np.asarray(mask.reduce(SCALE), dtype=np.float32)[..., None] / np.float32(255)  # a box average: ten times faster than Lanczos
    background = np.clip(np.array(scene.background_rgb, dtype=np.float32) + texture_field(scene.look)[..., None], 0, 255)
    pixels = np.asarray(ink.reduce(SCALE), dtype=np.float32) + background * (1 - alpha)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def _canonical(scene: Scene) -> list[tuple[tuple[str, str], int]]:
    return sorted(scene.kinds().items(), key=lambda item: (SHAPES.index(item[0][1]), item[0][0]))


def full_captions(scene: Scene) -> list[str]:
    """Two captions: the plain phrase and ``a photo of`` it (pairs: both orders)."""
    kinds = _canonical(scene)
    if len(kinds) == 1:
        (color, shape), count = kinds[0]
        return [phrase(color, shape, count), f"a photo of {phrase(color, shape, count)}"]
    first, second = (phrase(c, s, n) for (c, s), n in kinds)
    return [f"{first} and {second}", f"{second} and {first}"]


def base_captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Two captions that name without binding or counting: the colours then the shapes (each once, in random order), and one object."""
    kinds = [kind for kind, _ in _canonical(scene)]
    colors, shapes = list(dict.fromkeys(c for c, _ in kinds)), list(dict.fromkeys(s for _, s in kinds))
    words = [colors[i] for i in rng.permutation(len(colors))] + [shapes[i] for i in rng.permutation(len(shapes))]
    color, shape = kinds[int(rng.integers(len(kinds)))]
    return [", ".join(words), phrase(color, shape, 1)]


@functools.cache
def _phrases() -> dict[str, tuple[str, str, int]]:
    return {phrase(c, s, n): (c, s, n) for c in COLORS for s in SHAPES for n in COUNT_WORDS}


def true_of(caption: str, kinds: Mapping[tuple[str, str], int]) -> bool | None:
    """Whether a caption of the full grammar is true of an image that holds ``kinds`` (``{(color, shape): count}``).

    The rules of the queries' classes: ``a red circle`` (alone, or after ``a photo of``) is true when
    the image holds at least one red circle; ``two red circles`` when it holds exactly two and nothing
    else; ``a red circle and a blue square`` when it holds exactly those two kinds, one each.
    ``None``: outside the grammar (a base caption's list of words, a count in a pair, a pair of one
    kind twice, any other text).
    """
    held = {kind: n for kind, n in kinds.items() if n}
    parts = [_phrases().get(part) for part in caption.removeprefix("a photo of ").split(" and ")]
    if None in parts or len(parts) > 2:
        return None
    found = [part for part in parts if part is not None]
    if len(found) == 2:
        (c1, s1, n1), (c2, s2, n2) = found
        return None if n1 != 1 or n2 != 1 or (c1, s1) == (c2, s2) else held == {(c1, s1): 1, (c2, s2): 1}
    color, shape, count = found[0]
    return held.get((color, shape), 0) >= 1 if count == 1 else held == {(color, shape): count}


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
    """``red-circle/count-2/shapes-00012.png`` or ``blue-square/red-circle/shapes-00013.jpg``: labels as folders."""
    kinds = scene.kinds()
    folders = sorted(kind_label(c, s) for c, s in kinds)
    if len(kinds) == 1:
        folders.append(f"count-{next(iter(kinds.values()))}")
    return "/".join([*folders, f"shapes-{index:05d}.{'jpg' if scene.look.format == 'jpeg' else 'png'}"])


LABEL_FIELDS = ("file", "color", "shape", "count", "color2", "shape2", "count2", "background", "size")
STYLE_FIELDS = ("style", "image_size", "rotation", "shade", "texture", "format", "quality")


def label_row(file: str, scene: Scene) -> dict[str, object]:
    """One ``labels.csv`` row: the labels, then how the image was drawn."""
    kinds = _canonical(scene)
    (color, shape), count = kinds[0]
    second = kinds[1] if len(kinds) > 1 else (("", ""), 0)
    size = round(sum(o.radius for o in scene.objects) / len(scene.objects), 1)
    look = scene.look
    shades = " ".join(f"{c}=#{''.join(f'{v:02x}' for v in look.shades.get(c, COLORS[c]))}" for c in dict.fromkeys(o.color for o in scene.objects))
    return {
        "file": file, "color": color, "shape": shape, "count": count,
        "color2": second[0][0], "shape2": second[0][1], "count2": second[1], "background": scene.background, "size": size,
        "style": look.style, "image_size": look.size, "rotation": " ".join(f"{o.angle:g}" for o in scene.objects), "shade": shades,
        "texture": look.texture, "format": look.format, "quality": look.quality,
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


def _write_csv(path: Path, fields: tuple[str, ...], rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _save(image: Image.Image, path: Path, look: Look) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if look.format == "jpeg":
        image.save(path, format="JPEG", quality=look.quality)
    else:
        image.save(path, format="PNG")


def _random(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream] if any(stream) else seed)


def generate(out: Path, count: int, seed: int, held_out: bool = False, style: str = "plain", captions: str = "full") -> dict[str, int]:
    """Write the dataset into ``out`` (see the module docstring); returns counts of what was written.

    Raises:
        ValueError: ``count`` is below 2, or ``style`` or ``captions`` is not one of ``STYLES`` or ``CAPTION_MODES``.
    """
    if count < 2:
        raise ValueError(f"--count must be at least 2, not {count}")
    if style not in STYLES or captions not in CAPTION_MODES:
        raise ValueError(f"unknown style {style!r} or caption mode {captions!r}: styles are {', '.join(STYLES)}, captions {', '.join(CAPTION_MODES)}")
    drawn = STYLES[style]
    rng, caption_rng = _random(seed, drawn.stream), _random(seed, drawn.stream, 1)
    label_rows: list[dict[str, object]] = []
    caption_rows: list[dict[str, object]] = []
    for index, kinds in enumerate(scene_plan(rng, count, held_out)):
        scene = draw_look(rng, drawn, draw_scene(rng, kinds))
        file = relative_path(scene, index)
        _save(render(scene), out / "images" / file, scene.look)
        label_rows.append(label_row(file, scene))
        texts = full_captions(scene) if captions == "full" else base_captions(scene, caption_rng)
        caption_rows += [{"file": file, "caption": text} for text in texts]
    (out / "images").mkdir(parents=True, exist_ok=True)
    _write_csv(out / "labels.csv", LABEL_FIELDS + STYLE_FIELDS, label_rows)
    _write_csv(out / "captions.csv", ("file", "caption"), caption_rows)
    queries = make_queries(read_labels(out / "labels.csv"))
    (out / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    return {"images": count, "captions": len(caption_rows), "queries": len(queries)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``t2i dataset shapes``."""
    parser.add_argument("out", type=Path, help="folder to write images/, captions.csv, labels.csv and queries.jsonl into")
    parser.add_argument("--count", type=int, default=1000, help="number of images (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; use different seeds for training and evaluation sets")
    parser.add_argument("--held-out", action="store_true", help="leave a fixed quarter of the shape pairs out (for training sets)")
    styles = "plain (default: the original), wide (varied, for training) or shifted (settings plain and wide never draw, for evaluation)"
    parser.add_argument("--style", choices=tuple(STYLES), default="plain", help=styles)
    parser.add_argument("--captions", choices=CAPTION_MODES, default="full", help="full (default: counts, pairs) or base (names, no binding or counts)")


def command(args: argparse.Namespace) -> int:
    """Run ``t2i dataset shapes``."""
    written = generate(args.out, args.count, args.seed, args.held_out, args.style, args.captions)
    print(f"wrote {written['images']} images, {written['captions']} captions and {written['queries']} queries to {args.out}")
    return 0
