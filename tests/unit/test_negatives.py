"""Hard negatives: false for their image by its labels, one edit away from the caption, and none outside the grammar."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from relevance.negatives import hard_negative, parse
from relevance.shapes import COLORS, COUNT_WORDS, generate, read_labels

Objects = dict[tuple[str, str], int]


def objects_of(row: dict[str, str]) -> Objects:
    """What a ``labels.csv`` row shows: ``(color, shape)`` → how many."""
    found = {(row["color"], row["shape"]): int(row["count"])}
    if row["shape2"]:
        found[(row["color2"], row["shape2"])] = int(row["count2"])
    return found


def true_of(caption: str, objects: Objects) -> bool:
    """Whether ``caption`` is true of an image, as the judged queries of ``t2i dataset shapes`` decide it.

    ``a red circle``: the image has one (or more); ``two red circles``: exactly two and nothing else;
    a pair: exactly those two objects.
    """
    parsed = parse(caption)
    assert parsed is not None, caption
    kinds = parsed[1]
    if len(kinds) == 1 and kinds[0].count == 1:
        return (kinds[0].color, kinds[0].shape) in objects
    return objects == {(k.color, k.shape): k.count for k in kinds}


def one_edit(caption: str, negative: str) -> bool:
    """``negative`` is ``caption`` with its two colours swapped, one colour changed, or its count word (and the noun's number) changed."""
    a, b = caption.split(" "), negative.split(" ")
    if len(a) != len(b):
        return False
    changed = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    colours = [(x, y) for x, y in changed if x in COLORS and y in COLORS]
    if colours == changed:
        return len(changed) == 1 or (len(changed) == 2 and changed[0] == changed[1][::-1])
    counts = {"a", *COUNT_WORDS.values()}
    return len(changed) in (1, 2) and changed[0][0] in counts and changed[0][1] in counts and all(x.rstrip("s") == y.rstrip("s") for x, y in changed[1:])


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    generate(out, 300, seed=5)
    return out


def test_every_negative_of_the_generated_captions_is_false_for_its_image_and_one_edit_away(shapes_set: Path) -> None:
    objects = {row["file"]: objects_of(row) for row in read_labels(shapes_set / "labels.csv")}
    with (shapes_set / "captions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = np.random.default_rng(0)
    negatives = [(row, hard_negative(row["caption"], rng)) for row in rows]
    assert all(true_of(row["caption"], objects[row["file"]]) for row in rows)  # the check itself reads the captions right
    found = [(row, negative) for row, negative in negatives if negative is not None]
    assert len(found) >= 0.95 * len(rows)
    wrong = [(row["caption"], negative) for row, negative in found if true_of(negative, objects[row["file"]])]
    assert wrong == []
    far = [(row["caption"], negative) for row, negative in found if not one_edit(row["caption"], negative)]
    assert far == []
    # Both kinds of edit occur, and more than one edit of the same caption.
    assert any(" and " in negative for _, negative in found) and any(" and " not in negative for _, negative in found)
    assert len({hard_negative("a red circle", np.random.default_rng(seed)) for seed in range(20)}) == 2


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("a red circle and a blue square", {"a blue circle and a red square"}),
        ("a blue square and a red circle", {"a red square and a blue circle"}),
        ("two red circles", {"three red circles"}),
        ("a photo of three blue squares", {"a photo of two blue squares"}),
        ("a red circle", {"two red circles", "three red circles"}),
        # Swapping the colours names the same objects: one colour changes to a third instead.
        (
            "a red circle and a blue circle",
            {"a green circle and a blue circle", "a yellow circle and a blue circle", "a red circle and a green circle", "a red circle and a yellow circle"},
        ),
        (
            "a red circle and a red square",
            {f"a {c} circle and a red square" for c in ("green", "blue", "yellow")} | {f"a red circle and a {c} square" for c in ("green", "blue", "yellow")},
        ),
    ],
)
def test_the_edits_of_the_grammar(caption: str, expected: set[str]) -> None:
    seen = {hard_negative(caption, np.random.default_rng(seed)) for seed in range(40)}
    assert seen == expected


@pytest.mark.parametrize(
    "caption",
    [
        "a dog on a sofa",
        "red, blue, circle, square",
        "a purple circle",
        "two red circle",
        "a red circles",
        "a red circle and",
        "A red circle",
        "a red circle next to a blue square",
        "",
    ],
)
def test_captions_outside_the_grammar_get_none(caption: str) -> None:
    assert hard_negative(caption, np.random.default_rng(0)) is None
