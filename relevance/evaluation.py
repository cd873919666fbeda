"""Judged queries in, metrics out: reading ``queries.jsonl``, scoring rankings, and the JSON, Markdown and plot reports.

A queries file has one JSON object per line::

    {"query": "two red circles", "relevant": ["a.png", "b.png"]}
    {"query": "a red circle", "relevant": {"a.png": 2, "c.png": 1}, "class": "shape", "labels": {"all_of": ["red-circle"]}}

``relevant`` is a list of ids (grade 1 each) or an object of id → grade (graded relevance, used by
nDCG). ``class`` groups queries in the report; ``labels`` is a label filter sent with the query
(``all_of``, ``any_of``, ``none_of``). Other fields are kept and ignored.

The running of queries is elsewhere (``t2i eval`` asks the gateway); this module only scores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UserError
from relevance.metrics import Comparison, compare, mean_metrics, metric_names, query_metrics

LABEL_KEYS = ("all_of", "any_of", "none_of")


@dataclass
class Query:
    """One judged query."""

    text: str
    judgements: dict[str, float]
    kind: str = ""
    labels: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def load_queries(path: Path) -> list[Query]:
    """Read a queries file (see the module docstring).

    Raises:
        UserError: a line that is not JSON or lacks ``query`` or ``relevant``, with its line number.
    """
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    queries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("query"), str) or not raw["query"].strip():
            raise UserError(f'{where}: each line needs {{"query": "...", "relevant": [...]}}')
        relevant = raw.get("relevant")
        if isinstance(relevant, list) and all(isinstance(item, str) for item in relevant):
            judgements = dict.fromkeys(relevant, 1.0)
        elif isinstance(relevant, dict) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in relevant.values()):
            judgements = {str(k): float(v) for k, v in relevant.items()}
        else:
            raise UserError(f'{where}: "relevant" must be a list of ids or an object of id -> grade')
        labels = raw.get("labels") or {}
        if not isinstance(labels, dict) or set(labels) - set(LABEL_KEYS):
            raise UserError(f'{where}: "labels" may only have {", ".join(LABEL_KEYS)}')
        known = {"query", "relevant", "class", "labels"}
        queries.append(Query(raw["query"], judgements, str(raw.get("class", "")), labels, {k: v for k, v in raw.items() if k not in known}))
    if not queries:
        raise UserError(f"{path} has no queries")
    return queries


def score(queries: Sequence[Query], rankings: Sequence[Sequence[str]], ks: Sequence[int]) -> dict[str, Any]:
    """Per-query metrics and their means, overall and per class (and for held-out queries, when marked)."""
    names = metric_names(ks)
    rows: list[dict[str, Any]] = []
    for query, ranking in zip(queries, rankings, strict=True):
        rows.append(
            {
                "query": query.text,
                "class": query.kind,
                "relevant": sum(1 for g in query.judgements.values() if g >= 1),
                "metrics": query_metrics(ranking, query.judgements, ks),
            }
        )
    groups: dict[str, list[dict[str, Any]]] = {}
    for query, row in zip(queries, rows, strict=True):
        if query.kind:
            groups.setdefault(query.kind, []).append(row)
        if query.extra.get("held_out"):
            groups.setdefault("held out", []).append(row)
    return {
        "ks": list(ks),
        "metrics": names,
        "overall": mean_metrics([r["metrics"] for r in rows], names),
        "classes": {name: {"queries": len(members), **mean_metrics([r["metrics"] for r in members], names)} for name, members in sorted(groups.items())},
        "queries": rows,
    }


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown(result: Mapping[str, Any], title: str) -> str:
    """The report's table: one row overall, one per class, and the exact reference when present."""
    names = result["metrics"]
    lines = [f"### {title}", "", "| queries | n | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    lines.append(f"| all | {len(result['queries'])} | " + " | ".join(_cell(result["overall"][n]) for n in names) + " |")
    for name, means in result["classes"].items():
        lines.append(f"| {name} | {means['queries']} | " + " | ".join(_cell(means[n]) for n in names) + " |")
    if exact := result.get("exact"):
        lines.append(f"| all, exact search | {len(result['queries'])} | " + " | ".join(_cell(exact["overall"][n]) for n in names) + " |")
    if recall := result.get("index_recall"):
        lines += ["", "Index recall (ANN top-K against exact top-K over the same vectors): " + ", ".join(f"@{k} {v:.3f}" for k, v in recall.items())]
    return "\n".join(lines) + "\n"


def comparison(before: Mapping[str, Any], after: Mapping[str, Any], key: str | None = None) -> Comparison:
    """Compare two saved results (``t2i eval`` JSON) query by query; ``key`` defaults to the largest P@K."""
    names = [n for n in before["metrics"] if n in after["metrics"]]
    key = key or max((n for n in names if n.startswith("P@")), key=lambda n: int(n[2:]), default=names[0])
    return compare({r["query"]: r["metrics"] for r in before["queries"]}, {r["query"]: r["metrics"] for r in after["queries"]}, names, key)


def comparison_markdown(found: Comparison, before: str, after: str) -> str:
    """Side-by-side means with their differences, then the queries that changed most."""
    lines = [f"| metric | {before} | {after} | change |", "|---|---:|---:|---:|"]
    for name in found.names:
        delta = found.delta[name]
        lines.append(f"| {name} | {_cell(found.before[name])} | {_cell(found.after[name])} | {'–' if delta is None else f'{delta:+.3f}'} |")
    if found.moved:
        key = next(k for k in found.moved[0] if k not in ("query", "delta"))
        lines += ["", f"Queries that changed most ({key}):", "", f"| query | {before} | {after} |", "|---|---:|---:|"]
        lines += [f"| {row['query']} | {row[key][0]:.2f} | {row[key][1]:.2f} |" for row in found.moved]  # type: ignore[index]
    return "\n".join(lines) + "\n"


def plot(results: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Grouped bars of each run's overall means (one group per metric), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(results)
    names = [n for n in next(iter(results.values()))["metrics"] if all(r["overall"].get(n) is not None for r in results.values())]
    width = 0.8 / max(1, len(runs))
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(names) * max(1, len(runs)) / 2 + 3), 4))
    for n, run in enumerate(runs):
        axes.bar([i + n * width for i in range(len(names))], [results[run]["overall"][m] for m in names], width, label=run)
    axes.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(names))], names, rotation=30)
    axes.set_ylim(0, 1)
    axes.set_ylabel("mean over queries")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
