"""The benchmarks' text queries: realistic sentences, as many distinct ones as a run needs, and the check that none repeats.

The gateway keeps an embedding cache and the baseline does not: a query sent twice to one gateway
is answered from the cache the second time, so a load level that repeats queries measures the cache,
not the stack. ``distinct_queries`` makes any number of different sentences, and
``check_distinct`` fails a run whose levels sent one twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import product

import numpy as np

ADJECTIVES = ("red", "black", "small", "old", "shiny", "wet", "happy", "blue", "wooden", "tall", "striped", "green")
NOUNS = ("dog", "car", "cat", "house", "bicycle", "tree", "boat", "horse", "cup of coffee", "astronaut", "rocket", "bird", "train", "flower")
PLACES = ("on grass", "in the city", "at night", "on a beach", "in the snow", "near a lake", "under the sun", "in a kitchen", "on a table", "in the rain")
# A fourth axis of short phrases, so that a run of several thousand queries needs no numbering.
TIMES = ("in the morning", "at noon", "in the evening", "in winter", "in summer", "in autumn")


def sentences() -> list[str]:
    """Distinct realistic queries (12 × 14 × 10 = 1,680), shuffled deterministically."""
    items = [f"a photo of a {a} {n} {p}" for a in ADJECTIVES for n in NOUNS for p in PLACES]
    np.random.default_rng(0).shuffle(items)
    return items


def distinct_queries(count: int) -> list[str]:
    """``count`` different queries of one shape ("a photo of a red dog on grass in winter"), shuffled deterministically.

    The 12 × 14 × 10 × 6 = 10,080 combinations come first; beyond them a query is a combination
    followed by ", take N", which no combination contains, so the list never repeats itself.
    """
    items = [f"a photo of a {a} {n} {p} {t}" for a, n, p, t in product(ADJECTIVES, NOUNS, PLACES, TIMES)]
    np.random.default_rng(0).shuffle(items)
    return [items[i] if i < len(items) else f"{items[i % len(items)]}, take {i // len(items) + 1}" for i in range(count)]


def check_distinct(levels: Sequence[Sequence[str]], what: str = "the load levels") -> int:
    """Raise unless every query of ``levels`` (one list of sent queries per level, in order) was sent once; returns how many.

    Raises:
        ValueError: a query was sent twice, within a level or in two of them (it names how many and the first).
    """
    counts = Counter(query for level in levels for query in level)
    repeated = {query: n for query, n in counts.items() if n > 1}
    if repeated:
        first = next(iter(repeated))
        extra = sum(repeated.values()) - len(repeated)
        raise ValueError(
            f"{what} sent {extra} repeated queries ({len(repeated)} distinct ones more than once, e.g. {first!r} ×{repeated[first]}): "
            "a repeat is answered by the gateway's embedding cache, which the baseline lacks"
        )
    return sum(counts.values())
