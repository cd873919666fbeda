"""``t2i export``: a CLIP checkpoint in, a Triton model repository with a manifest out."""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from transformers import CLIPImageProcessor, CLIPTokenizerFast

from core.manifest import PRECISIONS, PREPROCESSOR_FILE, TEXT_MODEL, TOKENIZER_FILE, VISION_MODEL, Manifest, resolve_precision
from core.settings import Settings
from export.checkpoint import Towers, load_towers
from export.onnx_export import convert_precision, export_fp32, layout_repository
from export.ort_gpu import fp16_cuda_parity
from export.parity import FP32_THRESHOLD, check_parity, onnx_embeddings, reference_inputs, torch_embeddings
from export.vocab import write_clip_vocab
from export.warmup import write_warmup
from inference.images import PreprocessConfig
from inference.tokenizer import ClipTokenizer

logger = logging.getLogger(__name__)


def write_tokenizer(towers: Towers, target: Path, work: Path) -> Path:
    """Write ``tokenizer.json``: the checkpoint's own tokenizer, else CLIP's from open-clip-torch."""
    source = towers.source
    if source and any((Path(source) / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        tokenizer = CLIPTokenizerFast.from_pretrained(source, local_files_only=True)
    else:
        vocab, merges = write_clip_vocab(work / "vocab")
        tokenizer = CLIPTokenizerFast(vocab_file=str(vocab), merges_file=str(merges))
    tokenizer.save_pretrained(str(work / "tokenizer"))
    shutil.copyfile(work / "tokenizer" / TOKENIZER_FILE, target / TOKENIZER_FILE)
    return target / TOKENIZER_FILE


def write_preprocessor(towers: Towers, target: Path) -> Path:
    """Write ``preprocessor_config.json``: the checkpoint's own, else CLIP's defaults for its image size."""
    path = target / PREPROCESSOR_FILE
    source = towers.source
    if source and (Path(source) / PREPROCESSOR_FILE).is_file():
        shutil.copyfile(Path(source) / PREPROCESSOR_FILE, path)
    else:
        size = towers.image_size
        CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).to_json_file(str(path))
    return path


def refresh_layout(repo: Path, manifest: Manifest, template: Path | None = None) -> Manifest:
    """Bring a cached export's configs and python wrapper up to date with the template; returns ``manifest``.

    ``template`` defaults to ``T2I_MODEL_TEMPLATE`` (the committed ``model_repository``).
    """
    layout_repository(repo, template or Settings().model_template, manifest.version)
    write_warmup(repo, manifest)  # the configs just copied carry the template's warm-up: this model's replaces it
    return manifest


def run_export(model: str, out: Path, precision: str = "fp32", version: int = 1, template: Path | None = None, notes: list[str] | None = None) -> Manifest:
    """Export ``model`` into the Triton repository ``out`` and verify parity.

    ``template`` holds the committed configs and the python-backend wrapper; it defaults to
    ``T2I_MODEL_TEMPLATE`` (the committed ``model_repository``).

    An fp16 export is also checked on CUDA through onnxruntime-gpu (``export.ort_gpu``) when a GPU
    can run it; ``notes`` (when given) gets the line that says whether it was, and why not.

    Raises:
        export.checkpoint.HubUnreachable: the model cannot be loaded offline.
        export.parity.ParityError: the fp32 export disagrees with PyTorch, or the fp16 one does on CUDA.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    towers = load_towers(model)
    layout_repository(out, template or Settings().model_template, version)
    text_dir, vision_dir = out / TEXT_MODEL / str(version), out / VISION_MODEL / str(version)
    with tempfile.TemporaryDirectory(prefix="t2i-export-") as tmp:
        work = Path(tmp)
        tokenizer = ClipTokenizer(write_tokenizer(towers, text_dir, work), towers.context_length)
        preprocess_config = PreprocessConfig.from_file(write_preprocessor(towers, vision_dir))
        logger.info("exporting %s to ONNX (opset fp32)", towers.model_id)
        fp32 = export_fp32(towers, work / "fp32")
        inputs = reference_inputs(tokenizer, preprocess_config)
        reference = torch_embeddings(towers, inputs)
        parity = {f"{k}_fp32": v for k, v in check_parity(reference, onnx_embeddings(fp32, inputs), FP32_THRESHOLD).items()}
        final = {}
        for name, src in fp32.items():
            final[name] = work / f"{name}.{precision}.onnx"
            convert_precision(src, final[name], precision)
        if precision != "fp32":
            measured = check_parity(reference, onnx_embeddings(final, inputs), threshold=None)
            parity.update({f"{k}_{precision}": v for k, v in measured.items()})
        if precision == "fp16":
            cuda = fp16_cuda_parity(final, inputs, reference)
            parity.update(cuda.parity)
            logger.info("%s", cuda.note)
            if notes is not None:
                notes.append(cuda.note)
        shutil.move(final[TEXT_MODEL], text_dir / "model.onnx")
        shutil.move(final[VISION_MODEL], vision_dir / "model.onnx")
    manifest = Manifest(
        model_id=towers.model_id,
        checksum=towers.checksum(),
        dimension=towers.dimension,
        precision=precision,
        context_length=towers.context_length,
        image_size=towers.image_size,
        random_weights=towers.random_weights,
        version=version,
        parity=parity,
    )
    manifest.write_versioned(out)
    write_warmup(out, manifest)  # Triton's model_warmup for this model's shapes (export/warmup.py)
    return manifest


def command(args: argparse.Namespace) -> int:
    """Run ``t2i export`` and print the manifest summary."""
    notes: list[str] = []
    manifest = run_export(args.model, args.out, resolve_precision(args.precision), args.version, notes=notes)
    print(f"exported {manifest.model_id} ({manifest.precision}, dim {manifest.dimension}) to {args.out}")
    for key, value in sorted(manifest.parity.items()):
        print(f"  parity {key}: min cosine {value:.6f}")
    for note in notes:
        print(f"  {note}")
    if manifest.random_weights:
        print("  NOTE: random weights - search rankings from this model are meaningless")
    return 0
