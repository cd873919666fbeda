"""Retrieval metrics over ranked ids: P@K, R@K, nDCG@K, MRR and average precision.

A query's judgements map each relevant id to a grade (1 for plain relevance; higher is better).
P@K, R@K, MRR and AP count an id as relevant when its grade is at least 1; nDCG@K uses the grades
(gain ``2**grade - 1``). Conventions, chosen to be the usual ones and tested:

- A ranking shorter than K counts its missing places as misses: P@K divides by K, not by the
  number of hits returned.
- A query with no relevant items has no defined recall, nDCG, MRR or AP: it is reported with
  ``None`` for those and left out of their means (P@K is 0, as every returned hit is wrong).
- Ties are broken by the ranking's order: the ranker decides, the metric never reorders.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

METRICS = ("P", "R", "nDCG")  # per cut-off K
OVERALL = ("MRR", "mAP")  # over the whole ranking


def _relevant(judgements: Mapping[str, float]) -> set[str]:
    return {item for item, grade in judgements.items() if grade >= 1}


def precision_at_k(ranking: Sequence[str], judgements: Mapping[str, float], k: int) -> float:
    """Share of the first ``k`` places that hold a relevant id (missing places are misses)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    relevant = _relevant(judgements)
    return sum(1 for item in ranking[:k] if item in relevant) / k


def recall_at_k(ranking: Sequence[str], judgements: Mapping[str, float], k: int) -> float | None:
    """Share of the relevant ids found in the first ``k`` places; None without relevant ids."""
    relevant = _relevant(judgements)
    if not relevant:
        return None
    return len(relevant & set(ranking[:k])) / len(relevant)


def ndcg_at_k(ranking: Sequence[str], judgements: Mapping[str, float], k: int) -> float | None:
    """Normalized discounted cumulative gain at ``k`` with gain ``2**grade - 1``; None without relevant ids."""
    ideal_grades = sorted((g for g in judgements.values() if g > 0), reverse=True)[:k]
    if not ideal_grades:
        return None
    ideal = sum((2**g - 1) / math.log2(rank + 2) for rank, g in enumerate(ideal_grades))
    gained = sum((2 ** judgements.get(item, 0) - 1) / math.log2(rank + 2) for rank, item in enumerate(ranking[:k]))
    return gained / ideal


def reciprocal_rank(ranking: Sequence[str], judgements: Mapping[str, float]) -> float | None:
    """1 / the rank of the first relevant id (0 if none is returned); None without relevant ids."""
    relevant = _relevant(judgements)
    if not relevant:
        return None
    return next((1 / (rank + 1) for rank, item in enumerate(ranking) if item in relevant), 0.0)


def average_precision(ranking: Sequence[str], judgements: Mapping[str, float]) -> float | None:
    """Mean of P@rank over the ranks of relevant ids, divided by all relevant ids (unreturned ones add 0)."""
    relevant = _relevant(judgements)
    if not relevant:
        return None
    found, total = 0, 0.0
    for rank, item in enumerate(ranking):
        if item in relevant:
            found += 1
            total += found / (rank + 1)
    return total / len(relevant)


def query_metrics(ranking: Sequence[str], judgements: Mapping[str, float], ks: Sequence[int]) -> dict[str, float | None]:
    """Every metric of one query: ``P@K``, ``R@K``, ``nDCG@K`` for each K, then ``MRR`` and ``mAP``."""
    found: dict[str, float | None] = {}
    for k in ks:
        found[f"P@{k}"] = precision_at_k(ranking, judgements, k)
        found[f"R@{k}"] = recall_at_k(ranking, judgements, k)
        found[f"nDCG@{k}"] = ndcg_at_k(ranking, judgements, k)
    found["MRR"] = reciprocal_rank(ranking, judgements)
    found["mAP"] = average_precision(ranking, judgements)
    return found


def metric_names(ks: Sequence[int]) -> list[str]:
    """The metric names of ``query_metrics`` in their order."""
    return [f"{name}@{k}" for k in ks for name in METRICS] + list(OVERALL)


def mean_metrics(rows: Sequence[Mapping[str, float | None]], names: Sequence[str]) -> dict[str, float | None]:
    """Each metric's mean over the queries where it is defined (None where it is defined for none)."""
    means: dict[str, float | None] = {}
    for name in names:
        values = [v for row in rows if (v := row.get(name)) is not None]
        means[name] = sum(values) / len(values) if values else None
    return means


@dataclass
class Comparison:
    """Two runs over the same queries: the mean of each metric, their difference, and the queries that moved most."""

    names: list[str]
    before: dict[str, float | None]
    after: dict[str, float | None]
    delta: dict[str, float | None]
    moved: list[dict[str, object]] = field(default_factory=list)


def compare(
    before: Mapping[str, Mapping[str, float | None]], after: Mapping[str, Mapping[str, float | None]], names: Sequence[str], key: str, top: int = 10
) -> Comparison:
    """Compare two runs' per-query metrics (query text → metrics) on the queries both ran.

    ``key`` is the metric that ranks the queries that changed most (for example ``P@10``).

    Raises:
        ValueError: the runs share no query.
    """
    shared = [query for query in before if query in after]
    if not shared:
        raise ValueError("the two runs have no query in common: compare runs over the same queries file")
    mean_before = mean_metrics([before[q] for q in shared], names)
    mean_after = mean_metrics([after[q] for q in shared], names)
    delta = {n: (None if mean_before[n] is None or mean_after[n] is None else mean_after[n] - mean_before[n]) for n in names}  # type: ignore[operator]
    changes = []
    for query in shared:
        a, b = before[query].get(key), after[query].get(key)
        if a is not None and b is not None and a != b:
            changes.append({"query": query, key: [a, b], "delta": b - a})
    changes.sort(key=lambda row: (-abs(float(row["delta"])), str(row["query"])))  # type: ignore[arg-type]
    return Comparison(list(names), mean_before, mean_after, delta, changes[:top])
