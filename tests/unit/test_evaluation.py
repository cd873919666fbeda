"""Judged queries: the file format, its errors, the grouping by class, and the reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import UserError
from relevance.evaluation import comparison, comparison_markdown, load_queries, markdown, plot, score


def write(path: Path, *lines: object) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_lists_grades_classes_and_filters(tmp_path: Path) -> None:
    queries = load_queries(
        write(
            tmp_path / "q.jsonl",
            {"query": "two red circles", "relevant": ["a", "b"], "class": "count"},
            "",
            {"query": "a red circle", "relevant": {"a": 2, "c": 1}, "labels": {"all_of": ["red-circle"]}, "held_out": True},
        )
    )
    assert [q.text for q in queries] == ["two red circles", "a red circle"]
    assert queries[0].judgements == {"a": 1.0, "b": 1.0} and queries[0].kind == "count"
    assert queries[1].judgements == {"a": 2.0, "c": 1.0} and queries[1].labels == {"all_of": ["red-circle"]} and queries[1].extra == {"held_out": True}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "q.jsonl:1: not JSON"),
        ({"relevant": ["a"]}, 'needs {"query"'),
        ({"query": "x", "relevant": "a"}, '"relevant" must be a list'),
        ({"query": "x", "relevant": {"a": True}}, '"relevant" must be a list'),
        ({"query": "x", "relevant": ["a"], "labels": {"some_of": []}}, '"labels" may only have'),
    ],
)
def test_bad_lines_name_the_line_and_the_fix(tmp_path: Path, line: object, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("{", r"\{").replace("(", r"\(")):
        load_queries(write(tmp_path / "q.jsonl", line))


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_queries(tmp_path / "none.jsonl")
    with pytest.raises(UserError, match="has no queries"):
        load_queries(write(tmp_path / "q.jsonl", ""))


@pytest.mark.torch  # the plot needs matplotlib (the relevance extra)
def test_scores_group_by_class_and_held_out_and_reports_render(tmp_path: Path) -> None:
    queries = load_queries(
        write(
            tmp_path / "q.jsonl",
            {"query": "q1", "relevant": ["a"], "class": "count"},
            {"query": "q2", "relevant": ["b"], "class": "binding", "held_out": True},
        )
    )
    result = score(queries, [["a", "x"], ["x", "b"]], (1, 2))
    assert result["overall"]["P@1"] == 0.5 and result["overall"]["MRR"] == 0.75
    assert result["classes"]["count"]["P@1"] == 1.0 and result["classes"]["binding"]["P@1"] == 0.0
    assert result["classes"]["held out"] == {**result["classes"]["binding"]}
    table = markdown(result, "run")
    assert "| all | 2 | 0.500 |" in table and "| binding | 1 | 0.000 |" in table
    better = score(queries, [["a", "x"], ["b", "x"]], (1, 2))
    found = comparison(result, better)  # ranked by the largest P@K, P@2: q2 found "b" within 2 both times
    assert found.delta["P@1"] == 0.5 and found.delta["P@2"] == 0.0
    assert found.moved == []
    assert "| P@1 | 0.500 | 1.000 | +0.500 |" in comparison_markdown(found, "before", "after")
    by_first = comparison(result, better, key="P@1")  # q2's first hit became the right one
    assert by_first.moved == [{"query": "q2", "P@1": [0.0, 1.0], "delta": 1.0}]
    assert "| q2 | 0.00 | 1.00 |" in comparison_markdown(by_first, "before", "after")
    assert plot({"before": result, "after": better}, tmp_path / "plot.png").stat().st_size > 1000
