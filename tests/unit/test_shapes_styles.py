"""The shapes generator's styles, base captions and ``true_of``: plain unchanged, shifted settings disjoint from training, captions that do not bind or count."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from relevance.shapes import (
    COLORS,
    SHAPES,
    STYLES,
    SYMMETRY,
    Style,
    _kinds_of,
    add_arguments,
    command,
    generate,
    make_queries,
    read_labels,
    shade_range,
    true_of,
)

OLD_FIELDS = ("file", "color", "shape", "count", "color2", "shape2", "count2", "background", "size")
# generate(out, 12, seed=3) by the generator before it had styles (commit b7a2236): captions.csv,
# queries.jsonl, then per labels.csv row its nine columns and the image's RGB pixels.
PLAIN_DIGEST = "eefbea82583d3d6d5e407495f3894b90eead147e081ef712d8a55d391f40b199"


def plain_digest(out: Path) -> str:
    digest = hashlib.sha256()
    digest.update((out / "captions.csv").read_bytes())
    digest.update((out / "queries.jsonl").read_bytes())
    for row in read_labels(out / "labels.csv"):
        digest.update(",".join(row[name] for name in OLD_FIELDS).encode())
        with Image.open(out / "images" / row["file"]) as image:
            digest.update(image.convert("RGB").tobytes())
    return digest.hexdigest()


def caption_rows(out: Path) -> list[dict[str, str]]:
    with (out / "captions.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def queries_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """72 images in each style (every query of the vocabulary has an image), and the plain images with base captions."""
    root = tmp_path_factory.mktemp("styles")
    made = {}
    for name, style, captions in (("plain", "plain", "full"), ("wide", "wide", "full"), ("shifted", "shifted", "full"), ("base", "plain", "base")):
        made[name] = root / name
        assert generate(made[name], 72, seed=5, style=style, captions=captions) == {"images": 72, "captions": 144, "queries": 72}
    return made


def test_plain_is_the_original_generator(tmp_path: Path) -> None:
    generate(tmp_path / "plain", 12, seed=3)
    assert plain_digest(tmp_path / "plain") == PLAIN_DIGEST
    generate(tmp_path / "named", 12, seed=3, style="plain", captions="full")
    assert plain_digest(tmp_path / "named") == PLAIN_DIGEST
    with (tmp_path / "plain" / "labels.csv").open(newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header[: len(OLD_FIELDS)]) == OLD_FIELDS and {"style", "image_size", "rotation", "texture", "format"} <= set(header[len(OLD_FIELDS) :])
    assert {row["style"] + row["image_size"] + row["texture"] + row["format"] for row in read_labels(tmp_path / "plain" / "labels.csv")} == {"plain64nonepng"}


def reachable_angles(style: Style) -> np.ndarray:
    """Every rotation ``style`` can give a square or triangle, both signs, on a 0.1° grid."""
    low, high = style.rotation
    magnitudes = np.arange(low, high + 0.05, 0.1)
    return np.concatenate([magnitudes, -magnitudes])


def test_shifted_settings_are_ones_training_never_uses() -> None:
    shifted, training = STYLES["shifted"], (STYLES["plain"], STYLES["wide"])
    for style in training:
        assert not set(shifted.sizes) & set(style.sizes)
        assert not set(shifted.textures) & set(style.textures)
        assert shade_range(shifted)[0] > shade_range(style)[1]
        for shape in ("square", "triangle"):  # modulo the shape's symmetry, no shifted angle within 5° of a training one
            period = SYMMETRY[shape]
            apart = (reachable_angles(shifted)[:, None] - reachable_angles(style)[None, :]) % period
            assert round(float(np.minimum(apart, period - apart).min()), 6) >= 5, (style.name, shape)
        if "jpeg" in style.formats:
            assert shifted.quality[1] < style.quality[0]
    assert set(shifted.formats) == {"jpeg"} and "none" not in shifted.textures
    assert shade_range(STYLES["wide"]) == (0, 25) and shade_range(shifted)[0] > 25


def test_every_image_was_drawn_with_its_style_s_settings(sets: dict[str, Path]) -> None:
    for name in ("plain", "wide", "shifted"):
        style, seen = STYLES[name], set()
        low, high = shade_range(style)
        for row in read_labels(sets[name] / "labels.csv"):
            with Image.open(sets[name] / "images" / row["file"]) as image:
                assert image.size == (int(row["image_size"]),) * 2 and image.format == row["format"].upper()
            assert int(row["image_size"]) in style.sizes and row["texture"] in style.textures and row["style"] == name
            assert row["file"].endswith(".jpg" if row["format"] == "jpeg" else ".png")
            quality = int(row["quality"])
            assert style.quality[0] <= quality <= style.quality[1] if row["format"] == "jpeg" else quality == 0
            for angle in map(float, row["rotation"].split()):
                assert angle == 0 or style.rotation[0] <= abs(angle) <= style.rotation[1]
            for part in row["shade"].split():
                color, rgb = part.split("=#")
                moved = max(abs(int(rgb[i : i + 2], 16) - base) for i, base in zip((0, 2, 4), COLORS[color], strict=True))
                assert low <= moved <= high, (name, row["file"], part)
            seen |= {row["image_size"], row["texture"], row["format"]}
        assert len(seen) == len(style.sizes) + len(style.textures) + len(style.formats), (name, seen)  # 72 images draw every option


def test_styles_keep_the_vocabulary_and_the_queries_follow_the_labels(sets: dict[str, Path]) -> None:
    vocabulary = {q["query"] for q in queries_of(sets["plain"])}
    assert len(vocabulary) == 72
    for name in ("wide", "shifted", "base"):
        rows = read_labels(sets[name] / "labels.csv")
        assert queries_of(sets[name]) == make_queries(rows)
        assert {q["query"] for q in queries_of(sets[name])} == vocabulary
    assert queries_of(sets["base"]) == queries_of(sets["plain"])  # captions change, the evaluation does not
    assert read_labels(sets["base"] / "labels.csv") == read_labels(sets["plain"] / "labels.csv")
    firsts = {name: tuple(read_labels(sets[name] / "labels.csv")[0][f] for f in OLD_FIELDS[1:]) for name in ("plain", "wide", "shifted")}
    assert len(set(firsts.values())) == 3, firsts  # one seed, three styles: three layouts from the first image on


WORD = re.compile(r"[a-z]+")


def test_base_captions_name_without_binding_or_counting(sets: dict[str, Path]) -> None:
    rows = {row["file"]: row for row in read_labels(sets["base"] / "labels.csv")}
    by_file: dict[str, list[str]] = {}
    for caption in caption_rows(sets["base"]):
        by_file.setdefault(caption["file"], []).append(caption["caption"])
    assert by_file.keys() == rows.keys()
    orders = set()
    for file, (bag, one) in by_file.items():
        row = rows[file]
        kinds = _kinds_of(rows[file])
        for text in (bag, one):
            assert not {"one", "two", "three"} & set(WORD.findall(text)) and " and " not in text, text
            assert {w for w in WORD.findall(text) if w in COLORS} <= {c for c, _ in kinds}
            assert {w for w in WORD.findall(text) if w in SHAPES or w.rstrip("s") in SHAPES} <= {s for _, s in kinds}
        words = bag.split(", ")
        colors, shapes = list(dict.fromkeys(c for c, _ in kinds)), list(dict.fromkeys(s for _, s in kinds))
        assert sorted(words[: len(colors)]) == sorted(colors) and sorted(words[len(colors) :]) == sorted(shapes) and len(words) == len(colors) + len(shapes)
        assert one in {f"a {c} {s}" for c, s in kinds} and true_of(one, kinds) is True and true_of(bag, kinds) is None
        if len(kinds) == 2:  # against the labels' (canonical) order
            orders.add((words[0] == row["color"], words[2] == row["shape"], one == f"a {row['color']} {row['shape']}"))
    assert {len({order[n] for order in orders}) for n in range(3)} == {2}  # across the pairs: both colour orders, both shape orders, either object


def test_base_captions_come_from_the_seed_and_leave_the_images_alone(sets: dict[str, Path], tmp_path: Path) -> None:
    generate(tmp_path / "again", 72, seed=5, captions="base")
    assert caption_rows(tmp_path / "again") == caption_rows(sets["base"])
    for row in read_labels(sets["plain"] / "labels.csv")[:12]:
        assert (sets["base"] / "images" / row["file"]).read_bytes() == (sets["plain"] / "images" / row["file"]).read_bytes()
    generate(tmp_path / "other", 72, seed=6, captions="base")
    assert caption_rows(tmp_path / "other") != caption_rows(sets["base"])


@pytest.mark.parametrize("name", ["plain", "shifted"])
def test_true_of_is_the_queries_relevance(sets: dict[str, Path], name: str) -> None:
    kinds = {row["file"]: _kinds_of(row) for row in read_labels(sets[name] / "labels.csv")}
    for query in queries_of(sets[name]):
        relevant = set(query["relevant"])
        for file, held in kinds.items():
            assert true_of(query["query"], held) is (file in relevant), (query["query"], file)
    for caption in caption_rows(sets[name]):
        assert true_of(caption["caption"], kinds[caption["file"]]) is True, caption


@pytest.mark.parametrize(
    ("caption", "truth"),
    [
        ("a red circle", True),
        ("a photo of a red circle", True),
        ("a blue circle", False),
        ("two red circles", False),  # there is a blue square too
        ("a red circle and a blue square", True),
        ("a blue square and a red circle", True),
        ("a blue circle and a red square", False),
        ("a red circle and a green square", False),
        ("one red circle", None),
        ("two red circle", None),
        ("a red circles", None),
        ("a purple circle", None),
        ("two red circles and a blue square", None),
        ("a red circle and a red circle", None),
        ("a red circle and a blue square and a green triangle", None),
        ("red, blue, circle, square", None),
        ("A red circle", None),
    ],
)
def test_true_of_a_pair_image(caption: str, truth: bool | None) -> None:
    assert true_of(caption, {("red", "circle"): 1, ("blue", "square"): 1}) is truth


def test_true_of_counts_exactly() -> None:
    two = {("red", "circle"): 2}
    assert true_of("two red circles", two) is True and true_of("a photo of two red circles", two) is True
    assert true_of("three red circles", two) is False and true_of("a red circle", two) is True
    assert true_of("two red circles", {("red", "circle"): 2, ("blue", "square"): 0}) is True  # a zero count holds nothing
    assert true_of("a red circle and a blue square", {("red", "circle"): 2, ("blue", "square"): 1}) is False
    assert true_of("two red circles", {("red", "circle"): 2, ("blue", "square"): 1}) is False  # exactly that, and nothing else


def test_the_command_passes_style_and_captions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert command(parser.parse_args([str(tmp_path / "set"), "--count", "4", "--seed", "1", "--style", "shifted", "--captions", "base"])) == 0
    assert "wrote 4 images, 8 captions" in capsys.readouterr().out
    assert {row["style"] for row in read_labels(tmp_path / "set" / "labels.csv")} == {"shifted"}
    assert all(" and " not in row["caption"] for row in caption_rows(tmp_path / "set"))
    with pytest.raises(SystemExit):
        parser.parse_args([str(tmp_path), "--style", "fancy"])
    with pytest.raises(ValueError, match="unknown style"):
        generate(tmp_path / "none", 4, seed=0, style="fancy")
    with pytest.raises(ValueError, match="caption mode"):
        generate(tmp_path / "none", 4, seed=0, captions="short")
