"""``python -m bench.pages``: walking 2,000 hits in pages of 100 against one SearchText of top_k 2,000.

clip-retrieval users report 2,000 results taking 38 s. This serves a sealed collection of
clustered 512-d vectors (``bench.data.clustered_vectors``, ids v0..) through the real stack: Milvus,
Triton with the random ViT-B/32 (int8, as ``make bench-ef``) and the gateway with
``T2I_MAX_TOP_K=2000`` so that one request can ask for all of them. Each round takes a new sentence
and, in alternating order, sends (a) one SearchText of top_k ``--total`` (the baseline) and (b) the
walk: SearchText of top_k ``--page`` with each response's ``next_page_token`` until ``--total`` hits
came back. It records every request's client-side milliseconds, whether the walk's ids equal the
single search's (same ids in the same order), and the ratio walk / single. One discarded round
warms the caches first. Writes ``bench/results/<date>-<label>-pages.json`` and the table between
the ``pages`` markers of ``docs/benchmarks.md``.

Each page asks Milvus for ``offset + page + 8`` hits (``search.pages``: the order is made from the
whole ranking up to the page), so page n costs about what one search of top_k ``n x page`` costs;
the walk's sum grows with the square of its pages.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.report import ROOT, measured, publish_docs, run_header

START, END = "<!-- pages:start -->", "<!-- pages:end -->"
ALIAS = "pages_bench"


def walk(client: Any, query: str, total: int, page: int) -> dict[str, Any]:
    """SearchText pages of ``page`` hits until ``total`` came back (or the walk ended): ids and each page's milliseconds."""
    ids: list[str] = []
    page_ms: list[float] = []
    token = ""
    from search.pages import MARGIN, decode_token

    fetched = offset = 0
    while len(ids) < total:
        fetched += offset + min(page, total - len(ids)) + MARGIN  # what search.pages asks Milvus for
        start = time.perf_counter()
        response = client.search_text(query, top_k=min(page, total - len(ids)), page_token=token)
        page_ms.append((time.perf_counter() - start) * 1000)
        ids += [hit.id for hit in response.hits]
        token = response.next_page_token
        if not token:
            break
        offset = decode_token(token).offset  # where this page ended in the ranking its search saw
    return {"ids": ids, "page_ms": page_ms, "ms": sum(page_ms), "fetched": fetched}


def single(client: Any, query: str, total: int) -> dict[str, Any]:
    start = time.perf_counter()
    response = client.search_text(query, top_k=total)
    return {"ids": [hit.id for hit in response.hits], "ms": (time.perf_counter() - start) * 1000}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Fill, serve, and time each round (see the module docstring)."""
    from bench.queries import sentences
    from bench.run import log, served_vectors

    rounds: list[dict[str, Any]] = []
    with served_vectors(args.data, "pages", ALIAS, args.size, {"T2I_MAX_TOP_K": str(args.total)}, 300) as client:
        queries = sentences()
        for number in range(args.rounds + 1):  # round 0 is discarded
            query = queries[number]
            runs = {"single": lambda q=query: single(client, q, args.total), "walk": lambda q=query: walk(client, q, args.total, args.page)}
            order = ["walk", "single"] if number % 2 else ["single", "walk"]
            done = {name: runs[name]() for name in order}
            same = done["walk"]["ids"] == done["single"]["ids"]
            overlap = len(set(done["walk"]["ids"]) & set(done["single"]["ids"]))
            entry = {
                "query": query,
                "first": order[0],
                "single_ms": round(done["single"]["ms"], 1),
                "walk_ms": round(done["walk"]["ms"], 1),
                "page_ms": [round(ms, 1) for ms in done["walk"]["page_ms"]],
                "walk_hits": len(done["walk"]["ids"]),
                "walk_fetched": done["walk"]["fetched"],
                "single_hits": len(done["single"]["ids"]),
                "same_ids_in_order": same,
                "shared_ids": overlap,
            }
            log(f"round {number}: single {entry['single_ms']} ms, walk {entry['walk_ms']} ms, same order {same}, shared {overlap}")
            if number:
                rounds.append(entry)
    return {"rounds": rounds, "summary": summarize(rounds, args.page)}


def summarize(rounds: list[dict[str, Any]], page: int) -> dict[str, Any]:
    """Medians over the rounds, and the walk's cost against the single search's."""
    single_ms = statistics.median(r["single_ms"] for r in rounds)
    walk_ms = statistics.median(r["walk_ms"] for r in rounds)
    return {
        "single_ms_median": round(single_ms, 1),
        "walk_ms_median": round(walk_ms, 1),
        "walk_over_single": round(walk_ms / single_ms, 2),
        "pages_median": statistics.median(len(r["page_ms"]) for r in rounds),
        "pages_range": [min(len(r["page_ms"]) for r in rounds), max(len(r["page_ms"]) for r in rounds)],
        "first_page_ms_median": round(statistics.median(r["page_ms"][0] for r in rounds), 1),
        "last_page_ms_median": round(statistics.median(r["page_ms"][-1] for r in rounds), 1),
        "walk_fetched_median": statistics.median(r["walk_fetched"] for r in rounds),
        "shared_ids_median": statistics.median(r["shared_ids"] for r in rounds),
        "walk_hits_median": statistics.median(r["walk_hits"] for r in rounds),
        "rounds_with_the_same_ids_in_order": sum(r["same_ids_in_order"] for r in rounds),
        "rounds": len(rounds),
    }


def render(report: dict[str, Any]) -> str:
    """The walk against the single search, from a result file."""
    s, p = report["summary"], report["parameters"]
    low, high = s["pages_range"]
    pages = f"{low}" if low == high else f"{low} to {high}"
    return "\n".join(
        [
            f"{measured(report)} (`{report['path']}`); {p['size']:,} clustered vectors of 512 dimensions, sealed, HNSW `ef` {p['ef']};"
            f" SearchText through the gateway, client-side milliseconds, median of {s['rounds']} rounds (a new sentence each, the two"
            " orders alternating, one warm-up round discarded):",
            "",
            "| request | hits | ms (median) |",
            "|---|---:|---:|",
            f"| one SearchText, top_k {p['total']:,} | {p['total']:,} | {s['single_ms_median']:,.1f} |",
            f"| the walk: SearchText pages of top_k {p['page']} with page_token, {pages} pages, all together | {s['walk_hits_median']:,} |"
            f" {s['walk_ms_median']:,.1f} |",
            f"| the walk's first page | {p['page']} | {s['first_page_ms_median']:,.1f} |",
            f"| the walk's last page | up to {p['page']} | {s['last_page_ms_median']:,.1f} |",
            "",
            f"The walk took {s['walk_over_single']}x the time of the single search; Milvus was asked for {s['walk_fetched_median']:,} hits"
            f" over its pages (each page ranks up to its own end). Of the single search's {p['total']:,} hits the walk's held"
            f" {s['shared_ids_median']:,} (median); the same ids in the same order in {s['rounds_with_the_same_ids_in_order']} of"
            f" {s['rounds']} rounds. They differ by HNSW's recall: the single search runs with `ef` {p['total'] + 8:,}, a page with"
            " `ef` of its own fetch, so early pages miss hits that a deeper one finds before its cursor (left out, never repeated).",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--size", type=int, default=20_000, help="vectors in the collection")
    parser.add_argument("--total", type=int, default=2000, help="hits to walk")
    parser.add_argument("--page", type=int, default=100, help="hits per page")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds")
    parser.add_argument("--label", default="vm", help="the machine's name in the file name (default vm)")
    args = parser.parse_args()
    found = measure(args)
    parameters = {"size": args.size, "total": args.total, "page": args.page, "rounds": args.rounds, "ef": 64, "precision": "int8", "label": args.label}
    report = {**run_header(parameters=parameters), **found}
    path = ROOT / "bench" / "results" / f"{report['date']}-{args.label}-pages.json"
    report["path"] = str(path.relative_to(ROOT))
    path.write_text(json.dumps(report, indent=1) + "\n")
    publish_docs(report, START, END, render)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
