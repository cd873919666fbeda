"""The shapes dataset: its labels describe its images, and its queries follow from its labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from relevance.shapes import COLORS, all_pairs, generate, is_held_out, read_labels

pytestmark = pytest.mark.torch  # scipy, which counts the blobs, comes with the export extra's scikit-image

NUMBERS = {"2": "two", "3": "three"}


def blobs(pixels: np.ndarray, color: str) -> list[str]:
    """The shape of each blob of ``color`` by how much of its bounding box it fills ("unclear" between the bands).

    Ideal fills: a triangle 0.43, a circle 0.79, a square 1. Only pixels close to the pure colour
    count, so blended edges neither join nor split blobs; on small shapes they blur the fill, hence
    the gaps between the bands.
    """
    mask = np.linalg.norm(pixels.astype(float) - np.array(COLORS[color]), axis=2) < 60
    labelled, count = ndimage.label(mask)
    found = []
    for n in range(1, count + 1):
        blob = labelled == n
        if blob.sum() < 10:
            continue  # a few blended edge pixels, not an object
        rows, cols = np.nonzero(blob)
        fill = blob.sum() / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))
        found.append("triangle" if fill < 0.62 else "circle" if 0.68 < fill < 0.8 else "square" if fill > 0.88 else "unclear")
    return found


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    written = generate(out, 72, seed=5)
    with (out / "captions.csv").open(newline="") as handle:
        captions = sum(1 for _ in csv.DictReader(handle))
    on_disk = {"images": len(list((out / "images").rglob("*.png"))), "captions": captions, "queries": len((out / "queries.jsonl").read_text().splitlines())}
    assert written == on_disk == {"images": 72, "captions": 144, "queries": 72}  # 12 shape, 24 count and 36 binding queries
    return out


def test_labels_match_the_pixels(dataset: Path) -> None:
    rows = read_labels(dataset / "labels.csv")
    assert len(rows) == 72
    unclear = total = 0
    for row in rows:
        pixels = np.asarray(Image.open(dataset / "images" / row["file"]).convert("RGB"))
        assert pixels.shape == (64, 64, 3)
        expected: dict[str, list[str]] = {color: [] for color in COLORS}
        expected[row["color"]] += [row["shape"]] * int(row["count"])
        if row["shape2"]:
            expected[row["color2"]] += [row["shape2"]] * int(row["count2"])
        for color in COLORS:
            found = blobs(pixels, color)
            assert len(found) == len(expected[color]), (row["file"], color, found)  # every object counted, of the right colour
            assert set(found) <= {*expected[color], "unclear"}, (row["file"], color, found)  # and never clearly another shape
            unclear += found.count("unclear")
            total += len(found)
    assert unclear < total * 0.2


def test_folders_are_the_labels_and_captions_name_what_is_drawn(dataset: Path) -> None:
    for row in read_labels(dataset / "labels.csv"):
        folders = row["file"].split("/")[:-1]
        assert f"{row['color']}-{row['shape']}" in folders
        assert (f"{row['color2']}-{row['shape2']}" in folders) if row["shape2"] else (f"count-{row['count']}" in folders)
    with (dataset / "captions.csv").open(newline="") as handle:
        captions = list(csv.DictReader(handle))
    by_file = {row["file"]: row for row in read_labels(dataset / "labels.csv")}
    for caption in captions:
        row = by_file[caption["file"]]
        assert row["color"] in caption["caption"] and row["shape"] in caption["caption"]
        if row["count"] == "2" and not row["shape2"]:
            assert caption["caption"].endswith(f"two {row['color']} {row['shape']}s")


def test_queries_follow_from_the_labels(dataset: Path) -> None:
    rows = {row["file"]: row for row in read_labels(dataset / "labels.csv")}
    queries = [json.loads(line) for line in (dataset / "queries.jsonl").read_text().splitlines()]
    assert {q["class"] for q in queries} == {"shape", "count", "binding"}
    for query in queries:
        assert query["relevant"], query["query"]
        for file in query["relevant"]:
            row = rows[file]
            if query["class"] == "count":  # "two red circles": exactly two red circles and nothing else
                assert query["query"] == f"{NUMBERS[row['count']]} {row['color']} {row['shape']}s"
                assert not row["shape2"]
            if query["class"] == "binding":  # the colour bound to the right shape
                assert query["query"] == f"a {row['color']} {row['shape']} and a {row['color2']} {row['shape2']}"
    binding = {q["query"] for q in queries if q["class"] == "binding"}
    assert {"a red circle and a blue square", "a blue circle and a red square"} <= binding  # a pair and its swap: only binding tells them apart


def test_held_out_pairs_stay_out_of_a_training_set_and_seeds_differ(tmp_path: Path) -> None:
    generate(tmp_path / "train", 144, seed=1, held_out=True)
    for row in read_labels(tmp_path / "train" / "labels.csv"):
        if row["shape2"]:
            assert not is_held_out(((row["color"], row["shape"]), (row["color2"], row["shape2"])))
    assert sum(is_held_out(pair) for pair in all_pairs()) == len(all_pairs()) // 4
    generate(tmp_path / "other", 144, seed=2)
    first = (tmp_path / "train" / "images").rglob("*.png")
    assert {p.read_bytes() for p in first}.isdisjoint(p.read_bytes() for p in (tmp_path / "other" / "images").rglob("*.png"))
    with pytest.raises(ValueError, match="at least 2"):
        generate(tmp_path / "none", 1, seed=0)


def shade_blobs(pixels: np.ndarray, rgb: np.ndarray) -> list[float]:
    """How round each blob of pixels near ``rgb`` is: its area over the circle through its farthest pixel.

    The measure does not change with rotation. Ideal: a triangle 0.41, a square 0.64, a circle 1
    (drawn, about 0.45, 0.63 and 0.88). A pixel belongs to the blob when it is within 60 of ``rgb``
    and nearer to it than halfway to the image's median (its background): JPEG edges join neither.
    """
    median = np.median(pixels.reshape(-1, 3), axis=0)
    mask = np.linalg.norm(pixels.astype(float) - rgb, axis=2) < min(60.0, 0.5 * float(np.linalg.norm(rgb - median)))
    labelled, count = ndimage.label(mask)
    found = []
    for n in range(1, count + 1):
        rows, cols = np.nonzero(labelled == n)
        if len(rows) < 8:
            continue  # a few blended edge pixels, not an object
        reach = np.hypot(rows - rows.mean(), cols - cols.mean()).max() + 0.5
        found.append(len(rows) / (np.pi * reach**2))
    return found


@pytest.mark.parametrize(("style", "recognized"), [("wide", 0.9), ("shifted", 0.85)])
def test_other_styles_draw_every_object_their_labels_name(tmp_path: Path, style: str, recognized: float) -> None:
    """Every object of each colour is there, apart from the others, in the labelled shade; shapes mostly tell apart by roundness alone."""
    generate(tmp_path, 144, seed=8, style=style)
    right = total = 0
    for row in read_labels(tmp_path / "labels.csv"):
        pixels = np.asarray(Image.open(tmp_path / "images" / row["file"]).convert("RGB"))
        shades = {part[: part.index("=")]: part[-6:] for part in row["shade"].split()}
        expected = {row["color"]: (row["shape"], int(row["count"]))}
        if row["shape2"]:
            expected[row["color2"]] = (row["shape2"], int(row["count2"]))
        for color in COLORS:
            rgb = np.array(list(bytes.fromhex(shades[color])) if color in shades else COLORS[color], dtype=float)
            found = shade_blobs(pixels, rgb)
            shape, count = expected.get(color, ("", 0))
            assert len(found) == count, (row["file"], color, found)
            right += sum(("triangle" if fill < 0.54 else "square" if fill < 0.755 else "circle") == shape for fill in found)
            total += count
    assert right >= recognized * total, (right, total)
