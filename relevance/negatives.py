"""Hard negatives for ``t2i finetune --hard-negatives`` (NegCLIP): a minimally edited caption that is false for its image.

Only captions in the shapes grammar (``relevance.shapes``) get one, since only there is the edit
known to be false:

- a pair, ``a red circle and a blue square``: the two colours swap (``a blue circle and a red
  square``); where that names the same objects again (equal colours, or equal shapes and counts)
  one colour changes to a colour neither object has instead;
- one kind with its count, ``two red circles``: the count word changes to another count of two or
  more (``three red circles``), the number of the noun following it. A count never changes to
  ``a red circle``: that caption is true of every image with a red circle (the ``shape`` queries
  of ``t2i dataset shapes``), so it would be a false negative of the image it was drawn from.
- ``a red circle``: where the image's captions state its counts (``exact``; the full captions of
  ``t2i dataset shapes`` give a single kind of object with its exact count), the count changes
  (``two red circles`` or ``three red circles``). Otherwise (the base captions name one object of
  any image, ``red, circle`` beside it) the colour changes (``a blue circle``), which is false of
  every image the generator draws: the two kinds of a pair never share a shape, and a single kind
  has one colour.

``a photo of`` before a caption stays. Every other caption (a user's own words, the base captions
that list colours and shapes without binding them) gets ``None``: a word-level edit of free text
could turn out true, and a true caption trained as a negative teaches the wrong thing.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, replace

import numpy as np

from relevance.shapes import COLORS, COUNT_WORDS, SHAPES, noun, phrase

PREFIX = "a photo of "
NUMBERS = {word: count for count, word in COUNT_WORDS.items()}


@dataclass(frozen=True)
class Kind:
    """One phrase of a caption: ``count`` objects of ``color`` and ``shape``."""

    color: str
    shape: str
    count: int

    def text(self) -> str:
        """The phrase, as ``relevance.shapes.phrase`` writes it."""
        return phrase(self.color, self.shape, self.count)


def parse_phrase(words: list[str]) -> Kind | None:
    """``[a, red, circle]`` or ``[two, red, circles]`` as a ``Kind``; ``None`` outside the grammar."""
    if len(words) != 3 or words[1] not in COLORS:
        return None
    article, color, name = words
    count = 1 if article == "a" else NUMBERS.get(article)
    if count is None:
        return None
    shape = next((s for s in SHAPES if noun(s, count) == name), None)
    return Kind(color, shape, count) if shape is not None else None


def parse(caption: str) -> tuple[str, list[Kind]] | None:
    """The prefix (``a photo of `` or empty) and the phrases of a caption in the shapes grammar; ``None`` outside it."""
    prefix = PREFIX if caption.startswith(PREFIX) else ""
    words = caption[len(prefix) :].split(" ")
    if len(words) == 3:
        kinds = [parse_phrase(words)]
    elif len(words) == 7 and words[3] == "and":
        kinds = [parse_phrase(words[:3]), parse_phrase(words[4:])]
    else:
        return None
    if any(kind is None for kind in kinds):
        return None
    return prefix, [kind for kind in kinds if kind is not None]


def _objects(kinds: list[Kind]) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for kind in kinds:
        found[(kind.color, kind.shape)] = found.get((kind.color, kind.shape), 0) + kind.count
    return found


Edit = list[Kind]


def _pair_edits(pair: list[Kind]) -> list[list[Edit]]:
    """The edits of a pair, best first: the colours swapped; else one phrase in a colour neither has. Only those that name other objects."""
    swapped = [replace(pair[0], color=pair[1].color), replace(pair[1], color=pair[0].color)]
    spare = [color for color in COLORS if color not in {pair[0].color, pair[1].color}]
    recolored = [[replace(kind, color=color) if n == which else kind for n, kind in enumerate(pair)] for which in (0, 1) for color in spare]
    return [[edit for edit in tier if _objects(edit) != _objects(pair)] for tier in ([swapped], recolored)]


def _single_edits(kind: Kind, exact: bool) -> list[list[Edit]]:
    """The edits of one phrase: another count of two or more; for ``a red circle`` without ``exact``, another colour."""
    if kind.count == 1 and not exact:
        return [[[replace(kind, color=color)] for color in COLORS if color != kind.color]]
    return [[[replace(kind, count=count)] for count in COUNT_WORDS if count >= 2 and count != kind.count]]


def counts_stated(captions: Sequence[str]) -> bool:
    """Whether an image's captions state its counts: all of them are in the grammar (not so beside a base caption's list of words)."""
    return all(parse(caption) is not None for caption in captions)


def hard_negative(caption: str, rng: np.random.Generator, exact: bool = True, allowed: Container[str] | None = None) -> str | None:
    """A minimally edited caption that is false for the image ``caption`` describes (see the module docstring), or ``None``.

    ``exact``: ``a red circle`` says the image holds exactly one red circle and nothing else (as in
    the full captions; ``counts_stated`` of the image's captions tells). ``allowed``: if given,
    only these texts may be returned, and a pair whose swap is not among them falls back to a
    recolouring that is. ``rng`` picks among the edits where there are several (which count, which
    colour).
    """
    parsed = parse(caption)
    if parsed is None:
        return None
    prefix, kinds = parsed
    for tier in _pair_edits(kinds) if len(kinds) == 2 else _single_edits(kinds[0], exact):
        texts = [prefix + " and ".join(kind.text() for kind in edit) for edit in tier]
        texts = [text for text in texts if allowed is None or text in allowed]
        if texts:
            return texts[int(rng.integers(len(texts)))]
    return None
