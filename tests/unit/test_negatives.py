"""Hard negatives: false for their image by its labels, one edit away from the caption, and none outside the grammar."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from relevance.negatives import counts_stated, hard_negative
from relevance.shapes import CAPTION_MODES, COLORS, COUNT_WORDS, all_pairs, generate, is_held_out, phrase, read_labels, true_of

Objects = dict[tuple[str, str], int]


def objects_of(row: dict[str, str]) -> Objects:
    """What a ``labels.csv`` row shows: ``(color, shape)`` → how many."""
    found = {(row["color"], row["shape"]): int(row["count"])}
    if row["shape2"]:
        found[(row["color2"], row["shape2"])] = int(row["count2"])
    return found


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
def shapes_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 300 images with full and with base captions."""
    sets = {mode: tmp_path_factory.mktemp(mode) for mode in CAPTION_MODES}
    for mode, out in sets.items():
        generate(out, 300, seed=5, captions=mode)
    return sets


def captions_by_file(*folders: Path) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for folder in folders:
        with (folder / "captions.csv").open(newline="") as handle:
            for row in csv.DictReader(handle):
                grouped.setdefault(row["file"], []).append(row["caption"])
    return grouped


@pytest.mark.parametrize("mix", [("full",), ("base",), ("full", "base")])
def test_every_negative_of_the_generated_captions_is_false_for_its_image_and_one_edit_away(shapes_sets: dict[str, Path], mix: tuple[str, ...]) -> None:
    objects = {row["file"]: objects_of(row) for row in read_labels(shapes_sets["full"] / "labels.csv")}
    grouped = captions_by_file(*(shapes_sets[mode] for mode in mix))
    rng = np.random.default_rng(0)
    rows = [(file, caption, hard_negative(caption, rng, counts_stated(texts))) for file, texts in grouped.items() for caption in texts]
    found = [(file, caption, negative) for file, caption, negative in rows if negative is not None]
    assert all(true_of(caption, objects[file]) is not False for file, caption, _ in rows)  # the labels read right
    assert [(caption, negative) for file, caption, negative in found if true_of(negative, objects[file]) is not False] == []
    assert [(caption, negative) for _, caption, negative in found if not one_edit(caption, negative)] == []
    in_grammar = [caption for _, caption, _ in rows if true_of(caption, {}) is not None]
    assert len(found) == len(in_grammar) and len(found) >= (0.95 if mix == ("full",) else 0.45) * len(rows)
    if mix == ("full",):  # counts and pairs both edited
        assert any(" and " in negative for *_, negative in found) and any(" and " not in negative for *_, negative in found)


def test_a_lone_object_changes_its_count_where_counts_are_stated_else_its_colour() -> None:
    assert {hard_negative("a red circle", np.random.default_rng(seed)) for seed in range(20)} == {"two red circles", "three red circles"}
    assert {hard_negative("a red circle", np.random.default_rng(seed), exact=False) for seed in range(40)} == {
        "a green circle",
        "a blue circle",
        "a yellow circle",
    }
    assert counts_stated(["a red circle", "a photo of a red circle"]) and not counts_stated(["red, circle", "a red circle"])
    assert hard_negative("two red circles", np.random.default_rng(0), exact=False) == "three red circles"  # a count stated is exact anyway


def test_negatives_drawn_from_a_training_set_s_own_captions_leave_its_held_out_pairs_unseen(tmp_path: Path) -> None:
    generate(tmp_path, 300, seed=6, held_out=True)
    grouped = captions_by_file(tmp_path)
    known = {caption for texts in grouped.values() for caption in texts}
    held_out = {f"{phrase(c1, s1, 1)} and {phrase(c2, s2, 1)}" for pair in all_pairs() if is_held_out(pair) for (c1, s1), (c2, s2) in (pair, pair[::-1])}
    assert not held_out & known
    rng = np.random.default_rng(0)
    free = [hard_negative(caption, rng, counts_stated(texts)) for texts in grouped.values() for caption in texts]
    kept = [hard_negative(caption, rng, counts_stated(texts), known) for texts in grouped.values() for caption in texts]
    assert held_out & set(free)  # a swap often names a held-out pair
    assert not held_out & set(kept) and set(kept) - {None} <= known and sum(n is not None for n in kept) >= 0.95 * len(kept)
    # A pair whose swap is not allowed falls back to a recolouring that is; nothing allowed, no negative.
    allowed = {"a red circle and a green square"}
    assert hard_negative("a red circle and a blue square", np.random.default_rng(0), allowed=allowed) == "a red circle and a green square"
    assert hard_negative("a red circle and a blue square", np.random.default_rng(0), allowed=set()) is None


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
