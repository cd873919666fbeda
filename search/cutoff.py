"""Relevance cut-offs: which of a search's top-k hits to keep, decided on their scores alone.

Every search returns ``top_k`` hits, relevant or not; a cut-off drops the tail that is not. It
runs after the index answered (and after ``min_score``), on at most ``top_k`` scores, in plain
Python: it never asks Milvus again.

- ``NONE`` keeps every hit.
- ``AUTOCUT`` cuts the ranking at its first large jump in score (``autocut``; the idea is
  Weaviate's autocut, which cuts at a "jump" of the score curve; the rule here is our own).
- ``CALIBRATED`` drops hits below a threshold calibrated per model on judged queries
  (``t2i eval --calibrate`` writes it into the model's manifest, ``core.manifest.Calibration``).
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import FailedPrecondition
from core.manifest import Calibration, Manifest
from core.records import Hit

# A gap is a jump when it is at least JUMP_FACTOR times the median of the ranking's other gaps
# (the candidate left out): the median is what the ranking's spacing usually is, one cliff among
# k-1 gaps does not move it, and leaving the candidate out lets a 3-hit ranking (one other gap) be
# cut too. 3 is large enough that an evenly or gently falling ranking (every gap within 3x of the
# others' median) is never cut, and small enough that a cluster of close scores over a drop of a
# few times their spacing is.
JUMP_FACTOR = 3.0
# ... and at least JUMP_SHARE of the whole score range s_1 - s_n: in a ranking of near-ties (median
# gap about 0) a rounding-sized step is no jump, and equal scores (range 0) are never cut.
JUMP_SHARE = 0.2
# ... and at least MIN_JUMP in cosine: smaller steps are within the noise of int8 against fp32 towers
# and of float32 scores, so near-ties (even with a range that is itself tiny) are never cut.
MIN_JUMP = 1e-3
# Fewer scores than this (one gap, no other to compare it with) show no jump: kept whole.
MIN_AUTOCUT_HITS = 3
CALIBRATE_HINT = "run 't2i eval --calibrate --queries FILE --model-repo REPO' against this gateway to write one, or use autocut or min_score"


class Cutoff(enum.Enum):
    """The relevance cut-off a search asks for."""

    NONE = "none"
    AUTOCUT = "autocut"
    CALIBRATED = "calibrated"


@dataclass(frozen=True)
class Cut:
    """What a cut-off kept, and the lowest score a hit needed (None when nothing was cut by rule)."""

    hits: list[Hit]
    cutoff: Cutoff
    score: float | None = None
    dropped: int = 0


def autocut(scores: Sequence[float]) -> int:
    """How many of ``scores`` (sorted descending) to keep: up to the first large jump, at least one.

    With gaps ``g_i = s_i - s_(i+1)``, the cut is after the first ``i`` where
    ``g_i >= JUMP_FACTOR * median(g_j, j != i)`` (the median of the other gaps),
    ``g_i >= JUMP_SHARE * (s_1 - s_n)`` and ``g_i >= MIN_JUMP``. No such gap, or fewer than
    ``MIN_AUTOCUT_HITS`` scores: all are kept. Negative gaps (scores out of order) count as 0.
    Deterministic, O(k log k) for k scores.
    """
    count = len(scores)
    if count < MIN_AUTOCUT_HITS:
        return count
    gaps = [max(0.0, float(scores[i]) - float(scores[i + 1])) for i in range(count - 1)]
    ordered = sorted(gaps)
    span = float(scores[0]) - float(scores[-1])
    for position, gap in enumerate(gaps, 1):
        if gap >= MIN_JUMP and gap >= JUMP_SHARE * span and gap >= JUMP_FACTOR * _median_without(ordered, gap):
            return position
    return count


def _median_without(ordered: Sequence[float], value: float) -> float:
    """The median of ``ordered`` (sorted, holding ``value``) with one copy of ``value`` left out."""
    removed = bisect.bisect_left(ordered, value)
    size = len(ordered) - 1

    def at(index: int) -> float:  # the index-th of the others
        return ordered[index if index < removed else index + 1]

    middle = size // 2
    return at(middle) if size % 2 else (at(middle - 1) + at(middle)) / 2


def calibration_of(manifest: Manifest, query_kind: str) -> Calibration:
    """The calibrated threshold of ``manifest``'s model for ``query_kind`` queries (``text`` or ``image``).

    Raises:
        FailedPrecondition: the model has none for that kind (with what to run).
    """
    calibration = manifest.calibration_for(query_kind)
    if calibration is not None:
        return calibration
    if query_kind != "text" and manifest.calibration_for("text") is not None:
        raise FailedPrecondition(
            f"model {manifest.model_id} (version {manifest.version}) is calibrated for text queries only; image-to-image "
            "cosines run on another scale, so the text threshold does not apply: use CUTOFF_AUTOCUT or min_score for image queries"
        )
    raise FailedPrecondition(f"cutoff CUTOFF_CALIBRATED: model {manifest.model_id} (version {manifest.version}) has no calibrated threshold; {CALIBRATE_HINT}")


def apply_cutoff(hits: list[Hit], cutoff: Cutoff, threshold: float | None = None) -> Cut:
    """Keep what ``cutoff`` keeps of ``hits`` (ranked, best first); ``threshold`` is the calibrated one for ``CALIBRATED``."""
    if cutoff is Cutoff.NONE:
        return Cut(hits, cutoff)
    if cutoff is Cutoff.CALIBRATED:
        if threshold is None:
            raise ValueError("a calibrated cut-off needs its threshold")
        kept = [hit for hit in hits if hit.score >= threshold]
        return Cut(kept, cutoff, threshold, len(hits) - len(kept))
    count = autocut([hit.score for hit in hits])
    if count == len(hits):
        return Cut(hits, cutoff)
    return Cut(hits[:count], cutoff, hits[count - 1].score, len(hits) - count)


def threshold_for(cutoff: Cutoff, manifest: Manifest, query_kind: str) -> float | None:
    """The calibrated threshold a ``CALIBRATED`` search of ``query_kind`` needs (checked before any encoding); None for the others."""
    return calibration_of(manifest, query_kind).threshold if cutoff is Cutoff.CALIBRATED else None
