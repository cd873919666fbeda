"""Retrieval metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from relevance.metrics import average_precision, compare, mean_metrics, ndcg_at_k, precision_at_k, query_metrics, recall_at_k, reciprocal_rank

RANKING = ["a", "x", "b", "y", "c"]
RELEVANT = dict.fromkeys(["a", "b", "c", "d"], 1.0)


def test_precision_counts_missing_places_as_misses() -> None:
    assert precision_at_k(RANKING, RELEVANT, 1) == 1.0
    assert precision_at_k(RANKING, RELEVANT, 3) == pytest.approx(2 / 3)
    assert precision_at_k(RANKING, RELEVANT, 5) == pytest.approx(3 / 5)
    assert precision_at_k(RANKING, RELEVANT, 10) == pytest.approx(3 / 10)  # five hits returned, ten places asked
    with pytest.raises(ValueError, match="at least 1"):
        precision_at_k(RANKING, RELEVANT, 0)


def test_recall_mrr_and_average_precision() -> None:
    assert recall_at_k(RANKING, RELEVANT, 1) == pytest.approx(1 / 4)
    assert recall_at_k(RANKING, RELEVANT, 5) == pytest.approx(3 / 4)  # "d" was never returned
    assert reciprocal_rank(RANKING, RELEVANT) == 1.0
    assert reciprocal_rank(["x", "y", "b"], RELEVANT) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x", "y"], RELEVANT) == 0.0
    assert average_precision(RANKING, RELEVANT) == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)


def test_ndcg_binary_and_graded() -> None:
    dcg = 1 + 1 / math.log2(4) + 1 / math.log2(6)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)
    assert ndcg_at_k(RANKING, RELEVANT, 5) == pytest.approx(dcg / ideal)
    graded = {"a": 2.0, "b": 1.0}
    assert ndcg_at_k(["b", "a"], graded, 2) == pytest.approx((1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)))
    assert ndcg_at_k(["a", "b"], graded, 2) == pytest.approx(1.0)
    assert ndcg_at_k(["x"], graded, 1) == 0.0


def test_ties_keep_the_rankers_order() -> None:
    # Equal scores are the ranker's business: the metric scores the order it was given.
    assert precision_at_k(["x", "a"], RELEVANT, 1) == 0.0
    assert precision_at_k(["a", "x"], RELEVANT, 1) == 1.0


def test_a_query_without_relevant_items_is_left_out_of_the_means() -> None:
    empty = query_metrics(["a", "b"], {}, (1, 5))
    assert empty["P@1"] == 0.0 and empty["R@5"] is None and empty["nDCG@5"] is None and empty["MRR"] is None and empty["mAP"] is None
    full = query_metrics(RANKING, RELEVANT, (1, 5))
    means = mean_metrics([empty, full], ["P@1", "R@5", "MRR"])
    assert means == {"P@1": 0.5, "R@5": pytest.approx(3 / 4), "MRR": 1.0}
    assert mean_metrics([empty], ["MRR"]) == {"MRR": None}


def test_compare_reports_differences_and_the_queries_that_moved() -> None:
    before = {"q1": {"P@10": 0.2}, "q2": {"P@10": 0.5}, "q3": {"P@10": 0.1}, "only before": {"P@10": 1.0}}
    after = {"q1": {"P@10": 0.9}, "q2": {"P@10": 0.4}, "q3": {"P@10": 0.1}}
    found = compare(before, after, ["P@10"], "P@10")
    assert found.before["P@10"] == pytest.approx(0.8 / 3) and found.after["P@10"] == pytest.approx(1.4 / 3)
    assert found.delta["P@10"] == pytest.approx(0.2)
    assert [row["query"] for row in found.moved] == ["q1", "q2"]  # biggest change first; q3 did not move
    with pytest.raises(ValueError, match="no query in common"):
        compare({"a": {}}, {"b": {}}, ["P@10"], "P@10")
