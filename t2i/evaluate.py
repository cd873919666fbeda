"""``t2i eval``: run judged queries through the real gateway and report P@K, R@K, nDCG@K, MRR and mAP.

Every query goes through ``SearchText`` on a running gateway, so the numbers are what users get:
the tokenizer, Triton, the index and the label filters. ``--exact`` adds the reference: the same
queries embedded by the gateway (``EmbedText``) and ranked by brute force over every vector of the
active collection (read from Milvus), so index recall (ANN against exact over the same vectors)
and model quality (the exact metrics) are reported apart.

``--compare A.json B.json`` sets two saved runs side by side (two models, fp32 against int8, two
ef settings): the means, their differences, and the queries that changed most.

Output (``--out``, default ``./eval``): ``eval.json``, ``eval.md`` and ``eval.png`` (or
``compare.*``); the Markdown table is printed too.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from core.errors import UserError
from core.filters import SearchFilter
from core.index import index_from_settings
from core.records import ModelStamp
from core.settings import Settings
from relevance.evaluation import Query, comparison, comparison_markdown, load_queries, markdown, plot, score
from t2i.client import GatewayClient
from text2image.v1 import text2image_pb2 as pb

DEFAULT_KS = (1, 5, 10)


def parse_ks(text: str) -> list[int]:
    """``1,5,10`` → ``[1, 5, 10]``.

    Raises:
        UserError: not a comma-separated list of positive integers.
    """
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise UserError(f"--k takes positive integers separated by commas, like 1,5,10 (not {text!r})")
    return ks


def _filter(query: Query) -> pb.Filter | None:
    return pb.Filter(labels=pb.LabelFilter(**query.labels)) if query.labels else None


def gateway_rankings(client: GatewayClient, queries: Sequence[Query], depth: int) -> tuple[list[list[str]], list[float]]:
    """Each query's ranked ids from ``SearchText`` (``depth`` deep), and the gateway's time per query in ms."""
    rankings, took = [], []
    for query in queries:
        search_filter = _filter(query)
        response = client.search_text(query.text, top_k=depth, **({"filter": search_filter} if search_filter else {}))
        rankings.append([hit.id for hit in response.hits])
        took.append(float(response.took_ms))
    return rankings, took


def exact_rankings(client: GatewayClient, info: pb.GetIndexInfoResponse, settings: Settings, queries: Sequence[Query], depth: int) -> list[list[str]]:
    """Brute-force rankings over every vector of the active collection (``info``'s), with the gateway's query embeddings."""
    index = index_from_settings(settings, ModelStamp(info.model_id, info.model_checksum, info.dimension))
    try:
        ids, vectors, labels = index.vectors(info.collection)
    finally:
        index.close()
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    embedded: list[list[float]] = []
    size = 32  # halved while the gateway refuses the batch (its T2I_MAX_BATCH)
    while len(embedded) < len(queries):
        texts = [q.text for q in queries[len(embedded) : len(embedded) + size]]
        try:
            response = client.embedding.EmbedText(pb.EmbedTextRequest(texts=texts), timeout=client.timeout_s)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and size > 1:
                size //= 2
                continue
            raise
        embedded += [list(e.values) for e in response.embeddings]
    scores = np.asarray(embedded, dtype=np.float32) @ vectors.T
    label_sets = [set(row) for row in labels]
    rankings = []
    for query, similarity in zip(queries, scores, strict=True):
        labels_of = query.labels.get
        rule = SearchFilter(all_of=labels_of("all_of", []), any_of=labels_of("any_of", []), none_of=labels_of("none_of", []))
        allowed = np.where([rule.matches_labels(s) for s in label_sets], similarity, -np.inf) if query.labels else similarity
        order = np.argsort(-allowed, kind="stable")[:depth]
        rankings.append([ids[i] for i in order if np.isfinite(allowed[i])])
    return rankings


def index_recall(ann: Sequence[Sequence[str]], exact: Sequence[Sequence[str]], ks: Sequence[int]) -> dict[str, float]:
    """Mean share of the exact top-K that the index returned in its top-K, for each K."""
    found = {}
    for k in ks:
        shares = [len(set(a[:k]) & set(e[:k])) / len(e[:k]) for a, e in zip(ann, exact, strict=True) if e[:k]]
        found[str(k)] = float(np.mean(shares)) if shares else 0.0
    return found


def evaluate(client: GatewayClient, queries: Sequence[Query], ks: Sequence[int], depth: int, exact: bool, settings: Settings | None = None) -> dict[str, Any]:
    """Run and score ``queries`` through ``client``'s gateway (see the module docstring)."""
    info = client.info()
    rankings, took = gateway_rankings(client, queries, depth)
    result = score(queries, rankings, ks)
    result["run"] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "model_id": info.model_id,
        "model_checksum": info.model_checksum,
        "collection": info.collection,
        "images": info.count,
        "random_weights": info.random_weights,
        "depth": depth,
        "median_took_ms": float(np.median(took)),
    }
    for row, ranking in zip(result["queries"], rankings, strict=True):
        row["ranking"] = ranking[: max(ks)]
    if exact:
        reference = exact_rankings(client, info, settings or Settings(), queries, depth)
        exact_result = score(queries, reference, ks)
        result["exact"] = {"overall": exact_result["overall"], "classes": exact_result["classes"]}
        result["index_recall"] = index_recall(rankings, reference, ks)
    return result


def write_report(result: dict[str, Any], out: Path, title: str) -> str:
    """Write ``eval.json``, ``eval.md`` and ``eval.png`` into ``out``; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=1))
    text = markdown(result, title)
    (out / "eval.md").write_text(text)
    runs = {"gateway": result} | ({"exact search": {"metrics": result["metrics"], "overall": result["exact"]["overall"]}} if "exact" in result else {})
    plot(runs, out / "eval.png")
    return text


def compare_files(first: Path, second: Path, out: Path) -> str:
    """Write ``compare.json``, ``compare.md`` and ``compare.png`` for two saved runs; returns the Markdown."""
    names = [path.parent.name if path.stem == "eval" else path.stem for path in (first, second)]
    if names[0] == names[1]:
        names = [f"{names[0]} (1)", f"{names[1]} (2)"]
    loaded = []
    for path in (first, second):
        try:
            loaded.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read {path} as a t2i eval result: {exc}") from None
    (before, after), (a, b) = names, loaded
    runs = dict(zip(names, loaded, strict=True))
    try:
        found = comparison(a, b)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except (KeyError, TypeError) as exc:
        raise UserError(f"{first} and {second} must both be eval.json files written by t2i eval (missing {exc})") from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({"before": before, "after": after, **found.__dict__}, indent=1))
    text = comparison_markdown(found, before, after)
    (out / "compare.md").write_text(text)
    plot(runs, out / "compare.png")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``t2i eval``."""
    parser.add_argument("--queries", type=Path, help="JSON lines of {query, relevant[, class, labels]}")
    parser.add_argument("--k", default=",".join(map(str, DEFAULT_KS)), help="cut-offs, comma-separated (default 1,5,10)")
    parser.add_argument("--depth", type=int, default=100, help="hits asked per query; recall, MRR and mAP look this deep (default 100)")
    parser.add_argument("--exact", action="store_true", help="also rank by brute force over the collection's vectors (reads Milvus: T2I_MILVUS_*)")
    parser.add_argument("--out", type=Path, default=Path("eval"), help="folder for the report (default ./eval)")
    parser.add_argument("--title", default=None, help="title of the Markdown table")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"), help="compare two saved results instead of running queries")


def command(args: argparse.Namespace, client: GatewayClient | None) -> int:
    """Run ``t2i eval``."""
    if args.compare:
        first, second = args.compare
        print(compare_files(first, second, args.out))
        print(f"wrote {args.out}/compare.json, compare.md and compare.png")
        return 0
    if not args.queries:
        raise UserError("give --queries FILE (or --compare A.json B.json)")
    ks = parse_ks(args.k)
    if args.depth < max(ks):
        raise UserError(f"--depth {args.depth} is shallower than the largest K ({max(ks)})")
    queries = load_queries(args.queries)
    assert client is not None
    result = evaluate(client, queries, ks, args.depth, args.exact)
    run = result["run"]
    print(write_report(result, args.out, args.title or f"{run['model_id']} on {run['images']} images ({len(queries)} queries)"))
    if run["random_weights"]:
        print("NOTE: the gateway serves random weights: these numbers measure chance")
    print(f"wrote {args.out}/eval.json, eval.md and eval.png")
    return 0
