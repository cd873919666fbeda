"""``t2i shapes-demo``: search whose rankings mean something, offline, from the first command.

Without ``--retrain`` (``make demo`` runs this part, in about a minute) it serves the trained
shapes model that ships in the repository (``relevance/models/shapes``, ``relevance.shipped``):
it rebuilds the model folder, exports it, starts the local stack, indexes a freshly drawn
evaluation set and a *shifted* one (the same words, drawn with settings training never used),
shows example queries with every hit marked right or wrong, and prints P@10 per query class beside
the numbers the recipe recorded.

``--retrain`` reproduces the seed project's experiment and rebuilds the shipped model:

1. The *base*: the ``small`` CLIP trained from a seeded start on captions written the way web
   captions are (``--captions base``: "red, blue, circle, square", or one object at a time), so it
   never learns counts or which colour goes with which shape.
2. *FLYP*: fine-tuning that base with CLIP's own contrastive loss on captions that state counts
   and bindings (``t2i finetune``); then the same with hard negatives (``--hard-negatives``), and
   with hard negatives on the ``wide`` generator with ``--augment`` (the shipped variant).
3. Every model is exported and evaluated through the gateway on the evaluation and shifted sets;
   the base's and the shipped model's top 5 for the example queries are shown side by side.
4. The shipped variant is packed (``relevance.shipped.pack``) into ``<data>/shapes-demo/shipped``;
   ``--ship`` writes it over the repository's copy, with the recipe and these numbers.

Everything lands in ``<data>/shapes-demo``; ``results/summary.json`` holds the numbers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from core.errors import FailedPrecondition, UserError
from core.manifest import Calibration, Manifest, write_calibration
from core.settings import Settings
from devstack.stack import LocalStack
from reindex.main import reindex
from relevance import shapes
from relevance.config import TrainConfig
from relevance.evaluation import Query, load_queries
from t2i.client import GatewayClient
from t2i.evaluate import evaluate, write_report

IMAGES = {"count": 10000, "seed": 1, "held_out": True}
DATA = {
    "base": {**IMAGES, "style": "plain", "captions": "base"},
    "full": {**IMAGES, "style": "plain", "captions": "full"},
    "wide": {**IMAGES, "style": "wide", "captions": "full"},
    "eval": {"count": 1200, "seed": 2, "held_out": False, "style": "plain", "captions": "full"},
    "shifted": {"count": 1200, "seed": 3, "held_out": False, "style": "shifted", "captions": "full"},
}
INIT_SEED = 0
FROZEN = ["text_model.embeddings.token_embedding"]
# The base and the fine-tuning runs (``base`` is filled in with the folder each starts from).
BASE_TRAINING = TrainConfig(base="", epochs=6, batch_size=64, lr=2e-3, warmup_steps=100, seed=0, freeze=FROZEN)
FLYP_TRAINING = TrainConfig(base="", epochs=10, batch_size=64, lr=1e-3, warmup_steps=100, seed=0, freeze=FROZEN)
VARIANTS: dict[str, tuple[str, TrainConfig]] = {
    "flyp": ("full", FLYP_TRAINING),
    "flyp-hn": ("full", replace(FLYP_TRAINING, hard_negatives=True)),
    "shipped": ("wide", replace(FLYP_TRAINING, hard_negatives=True, augment=True)),
}
NAMES = {
    "random": "random weights (the seeded start)",
    "base": "base (web-style captions)",
    "flyp": "FLYP",
    "flyp-hn": "FLYP + hard negatives",
    "shipped": "FLYP + hard negatives, wide generator + augment (shipped)",
    "shipped-int8": "shipped, int8",
}
KS = (1, 5, 10)
EXAMPLES = ("two red circles", "three yellow triangles", "a red circle and a blue square", "a green square and a yellow triangle", "a blue circle")


def _digest(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _source_digest(*files: str) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()[:16]


def ensure_dataset(folder: Path, spec: dict[str, Any]) -> Path:
    """Generate the set into ``folder`` unless it already holds this very one."""
    marker = folder / "dataset.json"
    wanted = {**spec, "generator": _source_digest(shapes.__file__)}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    written = shapes.generate(folder, spec["count"], spec["seed"], spec["held_out"], style=spec["style"], captions=spec["captions"])
    marker.write_text(json.dumps(wanted))
    print(f"drew {written['images']} images ({spec['style']}, {spec['captions']} captions) in {time.perf_counter() - started:.0f} s: {folder}", flush=True)
    return folder


def _base_identity(base: Path) -> str:
    """What a training starts from: the base's own cache key when it was trained here, else a digest of its weights."""
    if (base / "training" / "cache-key").is_file():
        return (base / "training" / "cache-key").read_text()
    weights = base / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.is_file() else str(base)


def ensure_trained(model: Path, data: Path, config: TrainConfig, what: str) -> dict[str, Any]:
    """Train ``model`` on ``data`` with ``config`` unless the cached one has the same data, settings and code; returns its history."""
    import torch

    from relevance import augment, finetune, negatives

    code = _source_digest(finetune.__file__, negatives.__file__, augment.__file__)
    parts = {"data": json.loads((data / "dataset.json").read_text()), "config": asdict(config), "code": code, "torch": torch.__version__}
    key = _digest({**parts, "base": _base_identity(Path(config.base))})
    marker = model / "training" / "cache-key"
    if marker.is_file() and marker.read_text() == key and (model / "config.json").is_file():
        print(f"using the {what} trained earlier in {model} (same data, settings and code)")
        history: dict[str, Any] = json.loads((model / "training" / "history.json").read_text())
        return history
    shutil.rmtree(model, ignore_errors=True)
    print(f"training the {what}: {config.epochs} epochs over {data} ...", flush=True)
    started = time.perf_counter()
    history = finetune.finetune(data / "captions.csv", data / "images", model, config)
    history["train_seconds"] = round(time.perf_counter() - started, 1)
    (model / "training" / "history.json").write_text(json.dumps(history, indent=2))
    marker.write_text(key)
    return history


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
    print(f"exporting {model} ({precision}) to {repo} ...", flush=True)
    return run_export(model, repo, precision)


def describe(row: dict[str, str]) -> str:
    """``2 red circles`` or ``1 red circle + 1 blue square``: what an image shows, from its labels."""
    first = f"{row['count']} {row['color']} {shapes.noun(row['shape'], int(row['count']))}"
    return f"{first} + {row['count2']} {row['color2']} {row['shape2']}" if row["shape2"] else first


def example_hits(client: GatewayClient, labels: dict[str, dict[str, str]], judged: dict[str, Query]) -> dict[str, list[dict[str, Any]]]:
    """Each example query's top five: score, what the image shows, and whether it is relevant."""
    found: dict[str, list[dict[str, Any]]] = {}
    for text in EXAMPLES:
        response = client.search_text(text, top_k=5)
        relevant = judged[text].judgements
        found[text] = [{"id": hit.id, "score": round(hit.score, 4), "shows": describe(labels[hit.id]), "right": hit.id in relevant} for hit in response.hits]
    return found


def evaluate_model(repo: Path, stack_dir: Path, data: Path, examples: bool = False) -> dict[str, Any]:
    """Start a stack on ``repo``, index ``data``'s images (a full rebuild), and run its judged queries through the gateway."""
    stack = LocalStack(repo, stack_dir, gateway_address="127.0.0.1:0", alias="shapes")
    with stack:
        return evaluate_served(stack, data, examples)


def evaluate_served(stack: LocalStack, data: Path, examples: bool = False) -> dict[str, Any]:
    """Index ``data``'s images (a full rebuild) into a running stack's alias, and run its judged queries through its gateway."""
    queries = load_queries(data / "queries.jsonl")
    report = asyncio.run(reindex(stack.settings(), str(data / "images"), full=True, batch_size=64, workers=2, progress=False))
    print(f"  {report.summary()}", flush=True)
    client = GatewayClient(stack.gateway_address, token=stack.token("read"), timeout_s=60)
    try:
        result = evaluate(client, queries, KS, depth=100, exact=True, settings=stack.settings())
        if examples:
            labels = {row["file"]: row for row in shapes.read_labels(data / "labels.csv")}
            result["examples"] = example_hits(client, labels, {q.text: q for q in queries})
        return result
    finally:
        client.close()


def p10(result: dict[str, Any]) -> dict[str, float]:
    """P@10 overall and per query class of one evaluation."""
    return {"overall": result["overall"]["P@10"], **{name: row["P@10"] for name, row in result["classes"].items()}}


def class_table(rows: dict[str, dict[str, float]]) -> str:
    """P@10 by class, one row per model (``rows``: name → ``p10``)."""
    classes = ("overall", "shape", "count", "binding", "held out")
    lines = ["| model | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for name, figures in rows.items():
        lines.append(f"| {NAMES.get(name, name)} | " + " | ".join(f"{figures.get(c, float('nan')):.3f}" for c in classes) + " |")
    return "\n".join(lines)


def side_by_side(left: dict[str, list[dict[str, Any]]], right: dict[str, list[dict[str, Any]]], titles: tuple[str, str]) -> str:
    """The example queries' top fives of two models next to each other, each hit marked ✓ or ✗."""
    out: list[str] = []
    for text in EXAMPLES:
        out += [f'query "{text}"', f"     {titles[0]:<40} {titles[1]}"]
        for rank, (a, b) in enumerate(zip(left[text], right[text], strict=False), 1):
            cells = [f"{'✓' if hit['right'] else '✗'} {hit['shows']}" for hit in (a, b)]
            out.append(f"  {rank}. {cells[0]:<40} {cells[1]}")
        out.append("")
    return "\n".join(out)


def marked(hits: dict[str, list[dict[str, Any]]]) -> str:
    """One model's example queries with their top five, marked ✓ or ✗."""
    out: list[str] = []
    for text, rows in hits.items():
        out.append(f'query "{text}"')
        out += [f"  {rank}. {'✓' if hit['right'] else '✗'} {hit['score']:+.3f}  {hit['shows']:<32} {hit['id']}" for rank, hit in enumerate(rows, 1)]
    return "\n".join(out)


def run_shipped(work: Path) -> dict[str, Any]:
    """The default demo: the shipped model, exported, serving a fresh evaluation set and a shifted one."""
    from relevance import shipped

    started = time.perf_counter()
    recipe = shipped.read_recipe()
    repo, _ = shapes_repository(work)
    sets = {name: ensure_dataset(work / name, DATA[name]) for name in ("eval", "shifted")}
    found = {name: evaluate_model(repo, work / "stacks" / name, folder, examples=name == "eval") for name, folder in sets.items()}
    print("\nthe shipped model (relevance/models/shapes), through the gateway; ✓ relevant by the labels, ✗ not\n")
    print(marked(found["eval"]["examples"]))
    rows = {"eval": p10(found["eval"]), "shifted": p10(found["shifted"])}
    recorded = recipe.get("results", {})
    print("\nP@10 by query class (1,200 images each; the recipe's own numbers in brackets)\n")
    for name, figures in rows.items():
        before = recorded.get(name, {})
        print(f"  {name:<8} " + "  ".join(f"{c} {v:.2f}" + (f" [{before[c]:.2f}]" if c in before else "") for c, v in figures.items()))
    summary = {"results": rows, "examples": found["eval"]["examples"], "seconds": round(time.perf_counter() - started, 1)}
    (work / "results").mkdir(parents=True, exist_ok=True)
    (work / "results" / "shipped.json").write_text(json.dumps(summary, indent=1))
    print(f"\nshapes demo finished in {summary['seconds']:.0f} s; try your own queries: make up, then http://127.0.0.1:8080/")
    return summary


def shapes_repository(work: Path) -> tuple[Path, Path]:
    """``t2i up --shapes``: the shipped model's repository (exported once) and the evaluation images to index."""
    from relevance import shipped

    model = shipped.materialize(work / "shipped-model")
    manifest = ensure_export(str(model), work / "repo-shipped")
    calibration = shipped.read_recipe().get("calibration")
    if calibration and not manifest.calibration.get("text"):  # the recipe's threshold (bench.cutoff --ship); a user's own calibration stays
        write_calibration(work / "repo-shipped", manifest.version, "text", Calibration.from_dict(calibration))
    return work / "repo-shipped", ensure_dataset(work / "eval", DATA["eval"]) / "images"


def index_shapes(settings: Settings, images: Path) -> str:
    """Index ``images`` for ``t2i up --shapes`` incrementally; rebuilt in full when the collection holds another model's vectors (a new shipped model)."""
    try:
        report = asyncio.run(reindex(settings, str(images), full=False, batch_size=64, workers=2, progress=False))
    except FailedPrecondition as exc:
        print(f"rebuilding the shapes collection: {exc}", flush=True)
        report = asyncio.run(reindex(settings, str(images), full=True, batch_size=64, workers=2, progress=False))
    return report.summary()


def train_all(work: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """The base and the fine-tuned variants (cached by their inputs): name → model folder, and their histories."""
    from relevance import shipped

    init = work / "models" / "init"
    if not (init / "config.json").is_file() or (init / "table-seed").read_text() != str(INIT_SEED):
        shipped.initial_model(init, "small", INIT_SEED)
    data = {name: ensure_dataset(work / "train" / name, DATA[name]) for name in ("base", "full", "wide")}
    models = {"random": init, "base": work / "models" / "base"}
    histories = {"base": ensure_trained(models["base"], data["base"], replace(BASE_TRAINING, base=str(init)), "base (web-style captions)")}
    for name, (dataset, config) in VARIANTS.items():
        models[name] = work / "models" / name
        histories[name] = ensure_trained(models[name], data[dataset], replace(config, base=str(models["base"])), NAMES[name])
    return models, histories


def run_retrain(work: Path, ship: bool = False) -> dict[str, Any]:
    """The seed project's experiment (see the module docstring); returns the summary it also writes."""
    from relevance import shipped

    started = time.perf_counter()
    models, histories = train_all(work)
    sets = {name: ensure_dataset(work / name, DATA[name]) for name in ("eval", "shifted")}
    recipe = {"command": "t2i shapes-demo --retrain", "data": DATA, "init_seed": INIT_SEED, "training": _training_record(histories)}
    shipped.pack(models["shipped"], work / "shipped", recipe, INIT_SEED)
    repos = {name: work / "repos" / name for name in (*models, "shipped-int8")}
    for name, folder in models.items():
        source = shipped.materialize(work / "shipped-model", work / "shipped") if name == "shipped" else folder
        ensure_export(str(source), repos[name])
    ensure_export(str(work / "shipped-model"), repos["shipped-int8"], "int8")
    found: dict[str, dict[str, Any]] = {}
    for name, repo in repos.items():
        for set_name, folder in sets.items():
            print(f"\n{NAMES[name]} on the {set_name} set", flush=True)
            found[f"{name}/{set_name}"] = evaluate_model(
                repo, work / "stacks" / f"{name}-{set_name}", folder, examples=set_name == "eval" and name in ("base", "shipped")
            )
    return _report(work, found, recipe, histories, started, ship)


def _training_record(histories: dict[str, Any]) -> dict[str, Any]:
    """Each training's settings, time, best epoch and validation curve (loss, P@10 and mAP after every epoch)."""
    curve = ("epoch", "loss", "seconds", "P@10", "mAP")
    return {
        name: {
            "config": h["config"],
            "seconds": h.get("train_seconds"),
            "best_epoch": (h.get("best") or {}).get("epoch"),
            "images": h.get("images"),
            "epochs": [{key: row.get(key) for key in curve} for row in h.get("epochs", [])],
        }
        for name, h in histories.items()
    }


def _report(work: Path, found: dict[str, dict[str, Any]], recipe: dict[str, Any], histories: dict[str, Any], started: float, ship: bool) -> dict[str, Any]:
    """Print and write the comparison; with ``ship``, copy the packed model and its numbers over the repository's."""
    from relevance import shipped

    results = work / "results"
    for key, result in found.items():
        write_report(result, results / key.replace("/", "-"), key)
    tables = {set_name: {name.split("/")[0]: p10(r) for name, r in found.items() if name.endswith("/" + set_name)} for set_name in ("eval", "shifted")}
    examples = {"base": found["base/eval"]["examples"], "shipped": found["shipped/eval"]["examples"]}
    print("\n### P@10 by class, evaluation set (seed 2, the training renderer)\n\n" + class_table(tables["eval"]))
    print("\n### P@10 by class, shifted set (seed 3, settings training never used)\n\n" + class_table(tables["shifted"]))
    print("\n### the same queries, base against shipped\n\n" + side_by_side(examples["base"], examples["shipped"], ("base", "shipped")))
    summary = {
        "recipe": recipe,
        "results": {
            key: {"overall": r["overall"], "classes": r["classes"], "exact": r["exact"]["overall"], "index_recall": r["index_recall"]}
            for key, r in found.items()
        },
        "p10": tables,
        "examples": examples,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=1))
    _compare_with_shipped(tables["eval"]["shipped"])
    packed = json.loads((work / "shipped" / shipped.RECIPE).read_text())
    packed["results"] = {"eval": tables["eval"]["shipped"], "shifted": tables["shifted"]["shipped"], "int8": tables["eval"]["shipped-int8"]}
    (work / "shipped" / shipped.RECIPE).write_text(json.dumps(packed, indent=1) + "\n")
    if ship:
        shipped.SHIPPED.mkdir(parents=True, exist_ok=True)
        for name in (shipped.WEIGHTS, shipped.RECIPE):
            shutil.copyfile(work / "shipped" / name, shipped.SHIPPED / name)
        print(f"wrote the new model over {shipped.SHIPPED}")
    print(f"\nshapes experiment finished in {summary['seconds']:.0f} s; reports in {results}")
    return summary


def _compare_with_shipped(retrained: dict[str, float]) -> None:
    from relevance import shipped

    try:
        before = shipped.read_recipe().get("results", {}).get("eval", {})
    except UserError:
        return
    if "overall" in before:
        gap = retrained["overall"] - before["overall"]
        verdict = "within the recipe's 0.02" if abs(gap) <= 0.02 else "WARNING: more than the recipe's 0.02 apart"
        print(f"retrained P@10 {retrained['overall']:.3f} against the shipped model's {before['overall']:.3f} ({gap:+.3f}: {verdict})")


def run_shapes_demo(work: Path, retrain: bool = False, ship: bool = False) -> dict[str, Any]:
    """``t2i shapes-demo``: the shipped model's demo, or with ``retrain`` the whole experiment.

    Raises:
        UserError: ``ship`` without ``retrain``.
    """
    if ship and not retrain:
        raise UserError("--ship writes the model that --retrain trains: give both")
    return run_retrain(work, ship) if retrain else run_shipped(work)
