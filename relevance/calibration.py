"""A score threshold for the relevance cut-off, picked on judged queries (``t2i eval --calibrate``).

Each judged query's hits come back ranked with their scores. A threshold ``t`` keeps the hits
scoring ``>= t``; over a set of queries, pooled (micro-averaged, one threshold for all):

- precision = relevant hits kept / hits kept (1.0 when nothing is kept),
- recall = relevant hits kept / relevant hits returned by the uncut search (0 when there are none),
- F1 = their harmonic mean.

Recall counts what the cut-off loses of what the search found, not of everything judged relevant:
the cut cannot bring back hits beyond the search's depth.

``pick_threshold`` tries a threshold between every two consecutive distinct scores (their midpoint,
so that the float32 scores the gateway compares are never on the edge) and the lowest score (keep
all). It picks the one with the best F1, or, given ``target_precision``, the one with the best
recall among those reaching that precision; ties go to the higher threshold. ``split`` divides the
queries deterministically: even positions (0, 2, ...) calibrate, odd positions are held out and only
measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class JudgedHits:
    """One query's returned hits: their scores (ranked) and whether each is relevant."""

    scores: Sequence[float]
    relevant: Sequence[bool]


@dataclass(frozen=True)
class CutQuality:
    """How a threshold cuts a set of queries' hits."""

    threshold: float
    precision: float
    recall: float
    f1: float
    kept: int
    relevant_kept: int
    relevant: int


def _quality(threshold: float, kept: int, relevant_kept: int, relevant: int) -> CutQuality:
    precision = relevant_kept / kept if kept else 1.0
    recall = relevant_kept / relevant if relevant else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return CutQuality(threshold, precision, recall, f1, kept, relevant_kept, relevant)


def cut_quality(queries: Sequence[JudgedHits], threshold: float) -> CutQuality:
    """Pooled precision, recall and F1 of keeping the hits scoring ``>= threshold``."""
    kept = relevant_kept = relevant = 0
    for query in queries:
        for score, good in zip(query.scores, query.relevant, strict=True):
            relevant += good
            if score >= threshold:
                kept += 1
                relevant_kept += good
    return _quality(threshold, kept, relevant_kept, relevant)


def candidates(queries: Sequence[JudgedHits]) -> list[CutQuality]:
    """Every distinct cut of the pooled hits, highest threshold first (see the module docstring)."""
    pooled = sorted(((float(s), bool(g)) for q in queries for s, g in zip(q.scores, q.relevant, strict=True)), key=lambda pair: -pair[0])
    relevant = sum(good for _, good in pooled)
    found: list[CutQuality] = []
    relevant_kept = 0
    for position, (score, good) in enumerate(pooled):
        relevant_kept += good
        following = pooled[position + 1][0] if position + 1 < len(pooled) else None
        if following is None:
            found.append(_quality(score, position + 1, relevant_kept, relevant))
        elif following < score:
            found.append(_quality((score + following) / 2, position + 1, relevant_kept, relevant))
    return found


def pick_threshold(queries: Sequence[JudgedHits], target_precision: float | None = None) -> CutQuality:
    """The threshold with the best F1 (or the best recall at ``target_precision`` or more) on ``queries``.

    Raises:
        ValueError: no hits at all, none of them judged relevant (every threshold would score 0), or no
            threshold reaches ``target_precision`` (the message gives the best precision reached).
    """
    found = candidates(queries)
    if not found:
        raise ValueError("no hits to calibrate on: the queries returned nothing")
    if found[0].relevant == 0:
        raise ValueError(f"none of the {len(queries)} calibration queries' hits is judged relevant: do the ids in --queries match the index's ids?")
    if target_precision is None:
        return max(found, key=lambda cut: cut.f1)  # max keeps the first of equals: the highest threshold
    reaching = [cut for cut in found if cut.precision >= target_precision and cut.relevant_kept > 0]
    if not reaching:
        best = max((cut.precision for cut in found if cut.relevant_kept > 0), default=0.0)
        raise ValueError(f"no threshold reaches precision {target_precision:g} on these queries (the best that keeps a relevant hit is {best:.3f})")
    return max(reaching, key=lambda cut: cut.recall)


def split(count: int) -> tuple[list[int], list[int]]:
    """Positions of ``count`` queries: even ones calibrate, odd ones are held out."""
    return list(range(0, count, 2)), list(range(1, count, 2))
