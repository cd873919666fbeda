"""``t2i eval``: run judged queries through the real gateway and report P@K, R@K, nDCG@K, MRR and mAP.

Every query goes through ``SearchText`` on a running gateway, so the numbers are what users get:
the tokenizer, Triton, the index and the label filters. ``--exact`` adds the reference: the same
queries embedded by the gateway (``EmbedText``) and ranked by brute force over every vector of the
active collection (read from Milvus), so index recall (ANN against exact over the same vectors)
and model quality (the exact metrics) are reported apart.

``--compare A.json B.json`` sets two saved runs side by side (two models, fp32 against int8, two
ef settings): the means, their differences, and the queries that changed most.

``--calibrate`` picks the relevance cut-off's threshold instead (``relevance.calibration``): the
queries at even positions choose the score threshold with the best F1 of the cut hits (or the best
recall at ``--target-precision``), the odd ones are held out and measured with it (beside autocut
and no cut), and the threshold is written into the manifest of the model version that serves the
gateway's index, in ``--model-repo`` (default ``T2I_MODEL_REPOSITORY``). The gateway rescans its
repository every 2 s (``inference.models.RESCAN_S``) and serves ``CUTOFF_CALIBRATED`` from then on.

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
from core.manifest import Calibration, Manifest, served_versions, write_calibration
from core.records import ModelStamp
from core.settings import Settings
from relevance.calibration import CutQuality, JudgedHits, cut_quality, pick_threshold, split
from relevance.evaluation import Query, comparison, comparison_markdown, load_queries, markdown, plot, score
from search.cutoff import autocut
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


def judged_hits(client: GatewayClient, queries: Sequence[Query], depth: int) -> list[JudgedHits]:
    """Each query's uncut hits from ``SearchText`` (``depth`` deep): their scores and whether each is judged relevant (grade >= 1)."""
    judged = []
    for query in queries:
        search_filter = _filter(query)
        response = client.search_text(query.text, top_k=depth, **({"filter": search_filter} if search_filter else {}))
        judged.append(JudgedHits([hit.score for hit in response.hits], [query.judgements.get(hit.id, 0.0) >= 1 for hit in response.hits]))
    return judged


def autocut_quality(queries: Sequence[JudgedHits]) -> CutQuality:
    """Pooled precision, recall and F1 of autocut (``search.cutoff.autocut``) on each query's hits; its threshold is reported as NaN."""
    kept = [JudgedHits(q.scores[:count], q.relevant[:count]) for q in queries for count in [autocut(q.scores)]]
    counted = cut_quality(kept, -np.inf)
    relevant = sum(sum(q.relevant) for q in queries)
    recall = counted.relevant_kept / relevant if relevant else 0.0
    f1 = 2 * counted.precision * recall / (counted.precision + recall) if counted.precision + recall else 0.0
    return CutQuality(float("nan"), counted.precision, recall, f1, counted.kept, counted.relevant_kept, relevant)


def served_version(repo: Path, info: pb.GetIndexInfoResponse) -> int:
    """The model version of ``repo`` whose manifest carries the stamp of the gateway's index.

    When two versions carry the same weights (an fp32 and an int8 export of one checkpoint, say), the
    newest one, as the catalog (``inference.models.ModelCatalog.for_stamp``) serves the newest.

    Raises:
        UserError: the repository is not there, or no version of it filled the index.
    """
    if not Path(repo).is_dir():
        raise UserError(f"--model-repo {repo} is not a folder: give the model repository the gateway serves (its T2I_MODEL_REPOSITORY)")
    versions = served_versions(repo)
    for version in reversed(versions):  # newest first, as the catalog serves it
        manifest = Manifest.read_version(repo, version)
        if (manifest.model_id, manifest.checksum) == (info.model_id, info.model_checksum):
            return version
    raise UserError(
        f"no model version in {repo} (versions {versions}) is {info.model_id} with checksum {info.model_checksum[:12]}, the model of the "
        f"gateway's index {info.collection or '(none)'}: give --model-repo the repository the gateway serves"
    )


def _row(cut: CutQuality) -> dict[str, Any]:
    """``cut`` as plain JSON: no threshold (None) for autocut and for no cut."""
    return {**cut.__dict__, "threshold": cut.threshold if np.isfinite(cut.threshold) else None}


def calibrate(client: GatewayClient, queries: Sequence[Query], depth: int, repo: Path, target_precision: float | None) -> dict[str, Any]:
    """Pick, measure and write the calibrated threshold (see the module docstring); what was found, as a dict."""
    info = client.info()
    version = served_version(repo, info)
    judged = judged_hits(client, queries, depth)
    chosen, held = split(len(judged))
    if not held:
        raise UserError(f"--calibrate needs at least 2 queries (even positions calibrate, odd ones are held out); {len(judged)} given")
    try:
        picked = pick_threshold([judged[i] for i in chosen], target_precision)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    held_out = [judged[i] for i in held]
    checked = cut_quality(held_out, picked.threshold)
    metric = "f1" if target_precision is None else f"recall at precision >= {target_precision:g}"
    written_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    calibration = Calibration(
        picked.threshold, metric, picked.precision, picked.recall, picked.f1, len(chosen), checked.precision, checked.recall, len(held), depth, written_at
    )
    files = write_calibration(repo, version, "text", calibration)
    return {
        "model_id": info.model_id, "model_checksum": info.model_checksum, "version": version, "collection": info.collection,
        "random_weights": info.random_weights, "calibration": calibration.__dict__, "files": [str(f) for f in files],
        "held_out": {name: _row(cut) for name, cut in (("calibrated", checked), ("autocut", autocut_quality(held_out)), ("none", cut_quality(held_out, -np.inf)))},
    }  # fmt: skip


def calibration_markdown(found: dict[str, Any]) -> str:
    """The calibration and its held-out check as a Markdown table."""
    cal = found["calibration"]
    lines = [
        f"Calibrated threshold {cal['threshold']:.4f} for {found['model_id']} version {found['version']} ({cal['metric']}, "
        f"{cal['queries']} queries at even positions; checked on {cal['held_out_queries']} held out, {cal['depth']} hits each)",
        "",
        "| cut-off | queries | precision | recall | F1 | hits kept |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| calibrated (calibration queries) | {cal['queries']} | {cal['precision']:.3f} | {cal['recall']:.3f} | {cal['f1']:.3f} | |",
    ]
    for name, cut in found["held_out"].items():
        lines.append(f"| {name} (held out) | {cal['held_out_queries']} | {cut['precision']:.3f} | {cut['recall']:.3f} | {cut['f1']:.3f} | {cut['kept']} |")
    return "\n".join(lines) + "\n"


def _calibrate_command(args: argparse.Namespace, client: GatewayClient, queries: Sequence[Query]) -> int:
    repo = Path(args.model_repo) if args.model_repo else Settings().model_repository
    found = calibrate(client, queries, args.depth, repo, args.target_precision)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "calibration.json").write_text(json.dumps(found, indent=1))
    print(calibration_markdown(found))
    if found["random_weights"]:
        print("NOTE: the gateway serves random weights: this threshold separates chance")
    print(f"wrote the threshold into {', '.join(found['files'])} and {args.out}/calibration.json; the gateway serves it within its 2 s rescan")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``t2i eval``."""
    parser.add_argument("--queries", type=Path, help="JSON lines of {query, relevant[, class, labels]}")
    parser.add_argument("--k", default=",".join(map(str, DEFAULT_KS)), help="cut-offs, comma-separated (default 1,5,10)")
    parser.add_argument("--depth", type=int, default=100, help="hits asked per query; recall, MRR and mAP look this deep (default 100)")
    parser.add_argument("--exact", action="store_true", help="also rank by brute force over the collection's vectors (reads Milvus: T2I_MILVUS_*)")
    parser.add_argument("--out", type=Path, default=Path("eval"), help="folder for the report (default ./eval)")
    parser.add_argument("--title", default=None, help="title of the Markdown table")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"), help="compare two saved results instead of running queries")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="pick the CUTOFF_CALIBRATED threshold (best F1) on the even-position queries, check it on the odd ones, write it",
    )
    parser.add_argument("--target-precision", type=float, default=None, help="with --calibrate: the threshold of best recall at this precision or more")
    parser.add_argument(
        "--model-repo", type=Path, default=None, help="with --calibrate: the model repository whose manifest gets it (default T2I_MODEL_REPOSITORY)"
    )


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
    if args.target_precision is not None and not (args.calibrate and 0 < args.target_precision <= 1):
        raise UserError("--target-precision takes a number in (0, 1] and goes with --calibrate")
    queries = load_queries(args.queries)
    assert client is not None
    if args.calibrate:
        return _calibrate_command(args, client, queries)
    result = evaluate(client, queries, ks, args.depth, args.exact)
    run = result["run"]
    print(write_report(result, args.out, args.title or f"{run['model_id']} on {run['images']} images ({len(queries)} queries)"))
    if run["random_weights"]:
        print("NOTE: the gateway serves random weights: these numbers measure chance")
    print(f"wrote {args.out}/eval.json, eval.md and eval.png")
    return 0
