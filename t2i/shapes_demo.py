"""``t2i shapes-demo`` / ``make demo-shapes``: search whose rankings mean something, offline, in one command.

1. Generates a training set (``--held-out``: a quarter of the shape pairs never seen) and an
   evaluation set from another seed (``relevance.shapes``).
2. Trains the ``small`` CLIP from scratch on the training captions (``t2i finetune``), or reuses
   the model cached under the data folder when every input of the training is unchanged.
3. Exports it (fp32 and int8) and the same architecture with random weights (the "before").
4. For each model: starts the local stack, indexes the evaluation images with the normal reindex
   job (the folders are the labels, so filters work), and runs ``t2i eval`` through the gateway.
   The trained model also answers example queries, shown with each hit's attributes.
5. Prints the comparison before → after, per query class (shape, count, binding, held out), and
   fp32 against int8 (int8 queries on the fp32 index, then a fully int8 index).

Everything lands in ``<data>/shapes-demo``; ``results/summary.json`` holds the numbers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.manifest import Manifest
from devstack.stack import LocalStack
from reindex.main import reindex
from relevance import shapes
from relevance.config import TrainConfig
from relevance.evaluation import Query, comparison, comparison_markdown, load_queries, markdown
from t2i.client import GatewayClient
from t2i.evaluate import evaluate, write_report

TRAIN = {"count": 3000, "seed": 1, "held_out": True}
EVAL = {"count": 1200, "seed": 2, "held_out": False}
# About 24 s an epoch on 2 CPU cores, so about 8 minutes (docs/relevance.md). The token
# embedding table (the real 49,408-token BPE) stays at its random start: the captions' few words
# do not need it learned, and leaving it out of the optimizer makes each step a third faster.
TRAINING = TrainConfig(base="small", epochs=20, batch_size=32, lr=1e-3, warmup_steps=80, seed=0, freeze=["text_model.embeddings.token_embedding"])
KS = (1, 5, 10)
EXAMPLES: tuple[tuple[str, dict[str, list[str]]], ...] = (
    ("two red circles", {}),
    ("a red circle and a blue square", {}),
    ("three yellow triangles", {}),
    ("a green square and a yellow triangle", {}),
    ("a red circle", {"all_of": ["blue-square"]}),
)


def _fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def ensure_dataset(folder: Path, spec: dict[str, Any]) -> Path:
    """Generate the set into ``folder`` unless it already holds this very one."""
    marker = folder / "dataset.json"
    wanted = {**spec, "generator": _source_digest(shapes.__file__)}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        print(f"using the dataset in {folder}")
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    written = shapes.generate(folder, spec["count"], spec["seed"], spec["held_out"])
    marker.write_text(json.dumps(wanted))
    print(f"generated {written['images']} images, {written['captions']} captions, {written['queries']} queries in {folder}")
    return folder


def _source_digest(*files: str) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()[:16]


def ensure_trained(work: Path, train: Path, retrain: bool) -> tuple[Path, dict[str, Any]]:
    """The trained model folder, from the cache when the data, settings and training code are unchanged."""
    import torch

    from relevance import finetune

    model = work / "model"
    key = _fingerprint(
        {
            "data": json.loads((train / "dataset.json").read_text()),
            "config": asdict(TRAINING),
            "code": _source_digest(finetune.__file__),
            "torch": torch.__version__,
        }
    )
    marker = model / "training" / "cache-key"
    if not retrain and marker.is_file() and marker.read_text() == key and (model / "config.json").is_file():
        history = json.loads((model / "training" / "history.json").read_text())
        print(f"using the model trained earlier in {model} (its data, settings and code are unchanged; --retrain to train again)")
        return model, history
    shutil.rmtree(model, ignore_errors=True)
    print(f"training the small CLIP from scratch on {train} ({TRAINING.epochs} epochs; about 8 minutes on 2 cores) ...", flush=True)
    started = time.perf_counter()
    history = finetune.finetune(train / "captions.csv", train / "images", model, TRAINING)
    history["train_seconds"] = round(time.perf_counter() - started, 1)
    (model / "training" / "history.json").write_text(json.dumps(history, indent=2))
    marker.write_text(key)
    return model, history


def ensure_export(model: str, repo: Path, precision: str = "fp32") -> Manifest:
    """Export ``model`` into ``repo`` unless it already holds that checkpoint at that precision."""
    from export.checkpoint import load_towers
    from export.main import refresh_layout, run_export

    try:
        existing = Manifest.read(repo)
        if existing.precision == precision and existing.checksum == load_towers(model).checksum():
            return refresh_layout(repo, existing)
    except FileNotFoundError:
        pass
    shutil.rmtree(repo, ignore_errors=True)
    print(f"exporting {model} ({precision}) to {repo} ...")
    return run_export(model, repo, precision)


def _describe(row: dict[str, str]) -> str:
    first = f"{row['count']} {row['color']} {shapes.noun(row['shape'], int(row['count']))}"
    return f"{first} + {row['count2']} {row['color2']} {row['shape2']}" if row["shape2"] else first


def show_examples(client: GatewayClient, labels: dict[str, dict[str, str]], judged: dict[str, Query]) -> None:
    """The example queries with their top five hits, each with its attributes and whether it is relevant."""
    from text2image.v1 import text2image_pb2 as pb

    for text, rule in EXAMPLES:
        fields = {"filter": pb.Filter(labels=pb.LabelFilter(**rule))} if rule else {}
        response = client.search_text(text, top_k=5, **fields)
        title = f'query "{text}"' + (f" with labels {rule}" if rule else "")
        print(f"\n{title}  ({response.took_ms:.0f} ms)")
        relevant = judged[text].judgements if text in judged and not rule else None
        for rank, hit in enumerate(response.hits, 1):
            mark = "" if relevant is None else ("  ✓" if hit.id in relevant else "  ✗")
            print(f"  {rank}. {hit.score:+.3f}  {_describe(labels[hit.id]):<32} {hit.id}{mark}")


def evaluate_model(repo: Path, stack_dir: Path, images: Path, queries: list[Query], full: bool = False, labels_csv: Path | None = None) -> dict[str, Any]:
    """Start a stack on ``repo``, index ``images`` (a full rebuild when ``full``), and run the queries through its gateway."""
    stack = LocalStack(repo, stack_dir, gateway_address="127.0.0.1:0", alias="shapes")
    with stack:
        report = asyncio.run(reindex(stack.settings(), str(images), full=full, batch_size=64, workers=2, progress=False))
        print(f"  {report.summary()}")
        client = GatewayClient(stack.gateway_address, token=stack.token("read"), timeout_s=60)
        try:
            if labels_csv is not None:
                show_examples(client, {row["file"]: row for row in shapes.read_labels(labels_csv)}, {q.text: q for q in queries})
            return evaluate(client, queries, KS, depth=100, exact=True, settings=stack.settings())
        finally:
            client.close()


def run_shapes_demo(work: Path, retrain: bool = False) -> dict[str, Any]:
    """The whole demo (see the module docstring); returns the summary it also writes."""
    started = time.perf_counter()
    train = ensure_dataset(work / "train", TRAIN)
    evaluation = ensure_dataset(work / "eval", EVAL)
    queries = load_queries(evaluation / "queries.jsonl")
    model, history = ensure_trained(work, train, retrain)
    repos = {
        "random": (ensure_export("small", work / "repo-random"), work / "repo-random"),
        "trained": (ensure_export(str(model), work / "repo-fp32"), work / "repo-fp32"),
        "trained-int8": (ensure_export(str(model), work / "repo-int8", "int8"), work / "repo-int8"),
    }
    results = work / "results"
    found = evaluate_all(work, {name: folder for name, (_, folder) in repos.items()}, evaluation, queries)
    report_all(found, results, len(queries))
    summary = {
        "train": TRAIN,
        "eval": EVAL,
        "training": {**asdict(TRAINING), "seconds": history.get("train_seconds"), "best_epoch": (history.get("best") or {}).get("epoch")},
        "results": {
            name: {"overall": r["overall"], "classes": r["classes"], "exact": r["exact"]["overall"], "index_recall": r["index_recall"]}
            for name, r in found.items()
        },
        "top10_overlap_int8": top_overlap(found["trained"], found["int8"], 10),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"top-10 overlap, fp32 against int8: {summary['top10_overlap_int8']:.3f}")
    print(f"\nshapes demo finished in {summary['seconds']:.0f} s; reports in {results}")
    return summary


def evaluate_all(work: Path, repos: dict[str, Path], evaluation: Path, queries: list[Query]) -> dict[str, dict[str, Any]]:
    """Each model's evaluation through its own stack: random, trained fp32, int8 queries over the fp32 index, int8 rebuilt."""
    found: dict[str, dict[str, Any]] = {}
    print("\nbefore training: the same architecture with random weights")
    found["random"] = evaluate_model(repos["random"], work / "stacks" / "random", evaluation / "images", queries)
    print("\nafter training (fp32)")
    shutil.rmtree(work / "stacks" / "trained", ignore_errors=True)  # the int8 runs below reuse this index: start it clean
    found["trained"] = evaluate_model(repos["trained"], work / "stacks" / "trained", evaluation / "images", queries, labels_csv=evaluation / "labels.csv")
    print("\nint8 towers, querying the index the fp32 model built (the stamp matches: nothing is re-encoded)")
    found["int8-queries"] = evaluate_model(repos["trained-int8"], work / "stacks" / "trained", evaluation / "images", queries)
    print("\nint8 towers, after a full rebuild of the index with int8")
    found["int8"] = evaluate_model(repos["trained-int8"], work / "stacks" / "trained", evaluation / "images", queries, full=True)
    return found


def report_all(found: dict[str, dict[str, Any]], results: Path, query_count: int) -> None:
    """Write each run's report and the comparison tables under ``results``, and print the tables."""
    for name, result in found.items():
        write_report(result, results / name, name)
    print()
    for name in ("random", "trained"):
        print(markdown(found[name], f"{name}: {query_count} queries over {EVAL['count']} held-out images"))
    tables = {}
    for before, after in (("random", "trained"), ("trained", "int8-queries"), ("trained", "int8")):
        table = comparison_markdown(comparison(found[before], found[after]), before, after)
        tables[f"{before} vs {after}"] = table
        (results / f"{before}-vs-{after}.md").write_text(table)
    print("### before and after training\n\n" + tables["random vs trained"])
    print("### fp32 against int8 (P@10 and nDCG@10 are the ones that decide)\n")
    print(tables["trained vs int8"])


def top_overlap(first: dict[str, Any], second: dict[str, Any], k: int) -> float:
    """Mean share of each query's top-``k`` ids that two runs have in common."""
    rankings = {row["query"]: row["ranking"][:k] for row in second["queries"]}
    shares = [len(set(row["ranking"][:k]) & set(rankings[row["query"]])) / k for row in first["queries"] if row["query"] in rankings]
    return sum(shares) / len(shares) if shares else 0.0
