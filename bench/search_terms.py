"""``python -m bench.search_terms``: the speed levers of combined queries and SearchBatch, each against its baseline in the same run.

Through the real stack: Milvus with a sealed collection of clustered 512-d vectors
(``bench.data.clustered_vectors``), Triton with the random ViT-B/32 (int8, as ``make bench-ef``),
and the gateway with the query-embedding cache off (``T2I_EMBEDDING_CACHE_SIZE=0``), so that every
text is encoded every time and both sides of each comparison can use the same sentences.

(a) Four text terms. One ``Search`` with 4 text terms (the gateway encodes them in one Triton
    batch) against the same terms encoded one by one: 4 ``EmbedText`` of one text each, then one
    ``Search`` with the combined vector (what a client does without combined queries). The
    encoding alone is compared too: one ``EmbedText`` of the 4 texts against 4 of one text.
(b) 32 queries. One ``SearchBatch`` of 32 searches of one text term each (the gateway encodes the
    32 texts ahead in one Triton batch and runs the 32 Milvus searches together) against the same
    32 sentences sent as ``SearchText`` one by one.

Each round takes new sentences and alternates which side goes first; one warm-up round is
discarded. Client-side milliseconds, medians over the rounds, and the ratios baseline / lever.
Writes ``bench/results/<date>-<label>-search-terms.json`` and the table between the
``search-terms`` markers of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import ROOT, measured, publish_docs, run_header
from text2image.v1 import text2image_pb2 as pb

START, END = "<!-- search-terms:start -->", "<!-- search-terms:end -->"
ALIAS = "terms_bench"
TERMS, BATCH, TOP_K = 4, 32, 10
WEIGHTS = (1.0, 0.5, -0.5, 0.25)


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return (time.perf_counter() - start) * 1000, result


def round_of(client: Any, texts: list[str], batch: list[str], flip: bool) -> dict[str, Any]:
    """One round of each comparison (see the module docstring); ``flip`` runs the baselines first."""
    timeout = 120

    def combined() -> list[str]:
        terms = [pb.QueryTerm(text=t, weight=w) for t, w in zip(texts, WEIGHTS, strict=True)]
        return [h.id for h in client.search.Search(pb.SearchRequest(terms=terms, top_k=TOP_K), timeout=timeout).hits]

    def one_by_one() -> list[str]:
        vectors = [np.asarray(client.embedding.EmbedText(pb.EmbedTextRequest(texts=[t]), timeout=timeout).embeddings[0].values) for t in texts]
        total: np.ndarray = np.sum([w * v for w, v in zip(WEIGHTS, vectors, strict=True)], axis=0)
        vector = pb.Vector(values=[float(x) for x in total / np.linalg.norm(total)])
        return [h.id for h in client.search.Search(pb.SearchRequest(terms=[pb.QueryTerm(vector=vector)], top_k=TOP_K), timeout=timeout).hits]

    def embed_together() -> list[np.ndarray]:
        return [np.asarray(e.values) for e in client.embedding.EmbedText(pb.EmbedTextRequest(texts=texts), timeout=timeout).embeddings]

    def embed_apart() -> list[np.ndarray]:
        return [np.asarray(client.embedding.EmbedText(pb.EmbedTextRequest(texts=[text]), timeout=timeout).embeddings[0].values) for text in texts]

    def search_batch() -> list[list[str]]:
        requests = [pb.SearchRequest(terms=[pb.QueryTerm(text=t)], top_k=TOP_K) for t in batch]
        results = client.search.SearchBatch(pb.SearchBatchRequest(requests=requests), timeout=timeout).results
        return [[h.id for h in r.response.hits] for r in results]

    def search_texts() -> list[list[str]]:
        return [[h.id for h in client.search_text(t, top_k=TOP_K).hits] for t in batch]

    pairs = {"terms": (combined, one_by_one), "embed": (embed_together, embed_apart), "batch": (search_batch, search_texts)}
    entry: dict[str, Any] = {}
    for name, (lever, baseline) in pairs.items():
        order = [("baseline", baseline), ("lever", lever)] if flip else [("lever", lever), ("baseline", baseline)]
        done = {side: timed(run) for side, run in order}
        entry[name] = {"lever_ms": round(done["lever"][0], 1), "baseline_ms": round(done["baseline"][0], 1)}
        lever_out, baseline_out = done["lever"][1], done["baseline"][1]
        if name == "embed":  # int8 towers quantize activations per batch: a text's vector depends a little on its batch
            entry[name]["min_cosine"] = round(min(float(np.dot(a, b)) for a, b in zip(lever_out, baseline_out, strict=True)), 6)
        else:
            entry[name]["same_hits"] = lever_out == baseline_out
            pairs_out = [(lever_out, baseline_out)] if name == "terms" else list(zip(lever_out, baseline_out, strict=True))
            entry[name]["shared"] = round(statistics.mean(len(set(a) & set(b)) / TOP_K for a, b in pairs_out), 3)
    return entry


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Fill, serve, and time each round."""
    from bench.queries import sentences
    from bench.run import log, served_vectors

    rounds: list[dict[str, Any]] = []
    env = {"T2I_EMBEDDING_CACHE_SIZE": "0", "T2I_MAX_BATCH": str(BATCH)}
    with served_vectors(args.data, "terms", ALIAS, args.size, env, 120) as client:
        queries = iter(sentences())
        for number in range(args.rounds + 1):  # round 0 is discarded
            texts, batch = [next(queries) for _ in range(TERMS)], [next(queries) for _ in range(BATCH)]
            entry = round_of(client, texts, batch, flip=bool(number % 2))
            log(f"round {number}: {entry}")
            if number:
                rounds.append(entry)
    return {"rounds": rounds, "summary": summarize(rounds)}


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds and baseline / lever for each comparison."""
    summary: dict[str, Any] = {"rounds": len(rounds)}
    for name in ("terms", "embed", "batch"):
        lever = statistics.median(r[name]["lever_ms"] for r in rounds)
        baseline = statistics.median(r[name]["baseline_ms"] for r in rounds)
        summary[name] = {"lever_ms_median": round(lever, 1), "baseline_ms_median": round(baseline, 1), "baseline_over_lever": round(baseline / lever, 2)}
        if name == "embed":
            summary[name]["min_cosine"] = min(r[name]["min_cosine"] for r in rounds)
        else:
            summary[name]["rounds_with_the_same_hits"] = sum(r[name]["same_hits"] for r in rounds)
            summary[name]["shared_hits_mean"] = round(statistics.mean(r[name]["shared"] for r in rounds), 3)
    return summary


def render(report: dict[str, Any]) -> str:
    """The two levers against their baselines, from a result file."""
    s, p = report["summary"], report["parameters"]
    rows = [
        ("terms", f"one Search of {TERMS} text terms (one Triton batch)", f"{TERMS} EmbedText of one text, then a Search by the summed vector"),
        ("embed", f"one EmbedText of {TERMS} texts", f"{TERMS} EmbedText of one text"),
        ("batch", f"one SearchBatch of {p['batch']} one-term searches", f"{p['batch']} SearchText one by one"),
    ]
    lines = [
        f"{measured(report)} (`{report['path']}`); {p['size']:,} vectors of 512 dimensions, sealed; random ViT-B/32 ({p['precision']}) on"
        f" Triton's CPU python backend, the query cache off, top_k {p['top_k']}; client-side milliseconds, median of {s['rounds']} rounds"
        " (new sentences each, the two sides' order alternating, one warm-up round discarded):",
        "",
        "| lever | ms (median) | baseline | ms (median) | baseline / lever |",
        "|---|---:|---|---:|---:|",
    ]
    for name, lever, baseline in rows:
        row = s[name]
        lines.append(f"| {lever} | {row['lever_ms_median']:,.1f} | {baseline} | {row['baseline_ms_median']:,.1f} | {row['baseline_over_lever']:.2f} |")
    same = (
        f"Both sides returned the same {p['top_k']} hits in the same order in {s['terms']['rounds_with_the_same_hits']} of {s['rounds']} rounds"
        f" for the combined query and in {s['batch']['rounds_with_the_same_hits']} of {s['rounds']} for the batch"
    )
    if "shared_hits_mean" in s["terms"]:  # recorded since the second run
        same += (
            f" (on average {s['terms']['shared_hits_mean']:.0%} and {s['batch']['shared_hits_mean']:.0%} of the hits shared): the int8 towers"
            " quantize their activations per batch, so a text's vector depends a little on the texts batched with it (lowest cosine between"
            f" a text encoded alone and in the batch of {p['terms']}: {s['embed']['min_cosine']:.6f}), and near-ties of the clustered vectors change places"
        )
    lines += ["", same + "."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--size", type=int, default=20_000, help="vectors in the collection")
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds")
    parser.add_argument("--label", default="vm", help="the machine's name in the file name (default vm)")
    args = parser.parse_args()
    found = measure(args)
    parameters = {"size": args.size, "rounds": args.rounds, "terms": TERMS, "weights": list(WEIGHTS), "batch": BATCH, "top_k": TOP_K, "ef": 64}
    report = {**run_header(parameters={**parameters, "precision": "int8", "embedding_cache": 0, "label": args.label}), **found}
    path = ROOT / "bench" / "results" / f"{report['date']}-{args.label}-search-terms.json"
    report["path"] = str(path.relative_to(ROOT))
    path.write_text(json.dumps(report, indent=1) + "\n")
    publish_docs(report, START, END, render)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
