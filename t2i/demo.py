"""``t2i demo`` / ``make demo``: export, start the local stack, index real photos, query, stop."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from core.manifest import AUTO, DEFAULT_MODEL, Manifest, resolve_precision
from core.settings import WebSettings
from devstack.stack import LocalStack
from export.checkpoint import HubUnreachable, model_key
from export.main import refresh_layout, run_export
from export.samples import sample_photos
from reindex.main import reindex
from t2i.client import GatewayClient, format_hits

logger = logging.getLogger(__name__)

DEMO_QUERIES = ("black dog", "red car", "green grass", "two cats")
RANDOM_BANNER = (
    "=" * 78 + "\n"
    "  RANDOM WEIGHTS: the model is the exact CLIP ViT-B/32 architecture with random weights,\n"
    "  because the real checkpoint could not be loaded. Speed and plumbing are real;\n"
    "  the RANKINGS BELOW ARE MEANINGLESS.\n" + "=" * 78
)


def _existing(repo: Path) -> Manifest | None:
    try:
        return Manifest.read(repo)
    except FileNotFoundError:
        return None


def ensure_model(repo: Path, model: str, fallback: str | None, precision: str = AUTO) -> Manifest:
    """The repository's manifest, exporting ``model`` first (or ``fallback`` when offline) if needed.

    ``precision`` ``auto`` (the default of the local CPU stack) keeps an existing export of the
    model at whatever precision it has, and exports a new one as int8 on CPUs with VNNI or AMX,
    fp32 elsewhere. An explicit precision re-exports when the repository holds another.
    """
    wanted = None if precision == AUTO else precision
    precision = resolve_precision(precision)
    existing = _existing(repo)
    if existing and existing.model_id == model_key(model) and wanted in (None, existing.precision):
        print(f"using the model already exported in {repo}: {existing.model_id} ({existing.precision})")
        return refresh_layout(repo, existing)
    try:
        print(f"exporting {model} to ONNX in {repo} ...")
        return run_export(model, repo, precision)
    except HubUnreachable as exc:
        if not fallback:
            raise
        print(f"OFFLINE: {exc}; falling back to '{fallback}' (exact ViT-B/32 architecture, random weights)")
    if existing and existing.model_id == model_key(fallback) and wanted in (None, existing.precision):
        print(f"using the fallback model already exported in {repo}: {existing.model_id}")
        return refresh_layout(repo, existing)
    return run_export(fallback, repo, precision)


def prepare_photos(target: Path) -> Path:
    """Copy the scikit-image sample photos into ``target`` (a fresh demo dataset)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in sample_photos():
        shutil.copyfile(path, target / path.name)
    return target


def run_demo(repo: Path, data_dir: Path, model: str = DEFAULT_MODEL, fallback: str | None = "random", precision: str = AUTO) -> int:
    """The whole demo; returns the exit code."""
    manifest = ensure_model(repo, model, fallback, precision)
    if manifest.random_weights:
        print(RANDOM_BANNER)
    photos = prepare_photos(data_dir / "photos")
    shutil.rmtree(data_dir / "stack", ignore_errors=True)
    stack = LocalStack(repo, data_dir / "stack", gateway_address="127.0.0.1:0", alias="t2i_demo")
    print("starting Milvus, Triton and the gateway on loopback ...")
    with stack:
        print(stack.describe())
        report = asyncio.run(reindex(stack.settings(), str(photos), full=False, batch_size=16, workers=2, progress=False))
        print(report.summary())
        for line in report.details():
            print(line)
        client = GatewayClient(stack.gateway_address, token=stack.token("read"))
        try:
            for query in DEMO_QUERIES:
                print(format_hits(f'\nquery "{query}"', client.search_text(query, top_k=5)))
            probe = photos / "chelsea.png"
            print(format_hits(f"\nimage query {probe.name} (uploaded bytes)", client.search_image(top_k=5, image=probe.read_bytes())))
        finally:
            client.close()
        print("\nstopping ...")
    if manifest.random_weights:
        print(RANDOM_BANNER)
    print("demo finished")
    print(
        f"to look at it in a browser: 'make up', then '.venv/bin/t2i reindex {photos}' in another terminal, and open http://{WebSettings().listen}/?q=red+car"
    )
    return 0
