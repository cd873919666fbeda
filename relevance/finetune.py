"""``t2i finetune``: fine-tune CLIP on your own captions with its own contrastive loss (FLYP).

"Finetune like you pretrain" (Goyal et al., 2022): the objective is CLIP's symmetric InfoNCE
between image and caption embeddings, with captions written the way prompts are, never a new
classification head. What this module adds to the textbook loop:

- Several captions per image (``captions.csv`` may repeat a file): each epoch samples one of an
  image's captions per visit. Identical captions in a batch are positives of each other's
  images, not negatives (``contrastive_loss``).
- AdamW with weight decay on matrices only (not on biases, norms, embeddings or the temperature),
  linear warm-up then cosine decay, and ``logit_scale`` learned and clamped at ln(100) as in CLIP.
- ``--freeze PREFIX`` freezes parameters by name prefix (for example ``vision_model.embeddings``).
- ``--hard-negatives`` (NegCLIP, Yuksekgonul et al., 2023): each batch adds, for each caption in
  the shapes grammar, a minimally edited false one (``relevance.negatives``: colours swapped, count
  changed) as an extra text, scored against the image it was made for and the answer for none.
- ``--augment``: label-preserving transforms of the training pixels (``relevance.augment``: turns,
  flips, a shrink inside the frame, brightness and contrast), never of the validation pixels.
- Each image is decoded once and its crop kept in memory (up to ``CACHE_BYTES``), not every epoch.
- Deterministic for a ``--seed``: the order of the data and the captions drawn follow from the
  seed and the epoch, and a resumed run continues exactly where the last saved epoch ended.
- ``<out>/training/state.pt`` is saved after every epoch; ``--resume`` continues from it.
- A validation split (by image) is held out; after every epoch text→image retrieval on it is
  measured (``relevance.metrics``) and the best epoch is written to ``<out>`` as a ``CLIPModel``
  folder with its tokenizer and ``preprocessor_config.json``, which ``t2i export`` takes as it is.

Images and captions are read and preprocessed by the same code the serving path uses
(``inference.images``, ``inference.tokenizer``), so training sees what Triton will be fed.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

from core.errors import UserError
from export.checkpoint import HUB_HOST, HubUnreachable, hub_reachable, random_configs, random_model
from export.vocab import write_clip_vocab
from inference.images import ImageLimits, PreprocessConfig, load_crop, normalize
from inference.tokenizer import ClipTokenizer
from relevance.augment import augment
from relevance.config import TrainConfig, config_from
from relevance.metrics import mean_metrics, query_metrics
from relevance.negatives import counts_stated, hard_negative

logger = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learned temperature at 100
STATE = Path("training") / "state.pt"
VALIDATION_KS = (1, 5, 10)


def pick_device(name: str) -> torch.device:
    """``auto``: the GPU when torch sees one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Pair:
    """One image and every caption written for it."""

    file: str
    captions: list[str]


def read_captions(path: Path, images: Path) -> list[Pair]:
    """``file,caption`` rows (extra columns ignored; a file may repeat) grouped by image.

    Raises:
        UserError: the file lacks the columns, is empty, or names images that do not exist.
    """
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "caption"} - set(reader.fieldnames or ())
        if missing:
            raise UserError(f"{path} needs a header with the columns file,caption (missing: {', '.join(sorted(missing))})")
        grouped: dict[str, list[str]] = {}
        for line, row in enumerate(reader, start=2):
            file, caption = (row.get("file") or "").strip(), (row.get("caption") or "").strip()
            if not file or not caption:
                raise UserError(f"{path}:{line}: every row needs a file and a caption")
            grouped.setdefault(file, []).append(caption)
    if not grouped:
        raise UserError(f"{path} has no rows")
    absent = [file for file in grouped if not (images / file).is_file()]
    if absent:
        raise UserError(f"{len(absent)} files of {path} are not under {images}, for example {absent[0]}")
    return [Pair(file, captions) for file, captions in grouped.items()]


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    captions: Sequence[str],
    negatives: torch.Tensor | None = None,
    negative_captions: Sequence[str] = (),
    negative_of: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over a batch of (image, caption) pairs, identical captions as positives, plus hard negatives.

    Row ``i`` of the batch is image ``i`` with caption ``captions[i]``. Where two rows share a
    caption, each image is a right answer for the other's caption (and the reverse), so the
    targets spread evenly over them instead of pushing equal captions apart.

    ``negatives`` (NegCLIP) are the embeddings of extra texts, ``negative_captions``, that have no
    image: they join the texts an image is scored against (image→text), with no target mass, so
    they are only ever wrong answers; text→image runs over the positive captions only. Negative
    ``k`` is scored against image ``i`` where ``negative_of[i, k]`` (a bool ``[images, negatives]``
    mask), against every image without one. A negative whose text is a caption of the batch is
    left out: it is already there, and right for its images.
    """
    image_embeds = nn.functional.normalize(image_embeds, dim=-1)
    text_embeds = nn.functional.normalize(text_embeds, dim=-1)
    logits = logit_scale.exp() * text_embeds @ image_embeds.t()  # [text, image]
    index = {caption: n for n, caption in enumerate(dict.fromkeys(captions))}
    keys = torch.tensor([index[caption] for caption in captions], device=logits.device)
    same = (keys[:, None] == keys[None, :]).to(logits.dtype)
    targets = same / same.sum(dim=1, keepdim=True)
    text_to_image = nn.functional.cross_entropy(logits, targets)
    image_logits = logits.t()  # ``same`` is symmetric: ``targets`` serve image→text too
    if negatives is not None:
        if len(negative_captions) != len(negatives):
            raise ValueError(f"{len(negatives)} negative embeddings but {len(negative_captions)} negative captions")
        kept = [n for n, caption in enumerate(negative_captions) if caption not in index]
        extra = logit_scale.exp() * image_embeds @ nn.functional.normalize(negatives[kept], dim=-1).t()
        if negative_of is not None:  # a large finite logit, not -inf: a zero target times -inf is NaN
            extra = extra.masked_fill(~negative_of[:, kept], -1e4)
        image_logits = torch.cat([image_logits, extra], dim=1)
        targets = torch.cat([targets, targets.new_zeros(len(captions), len(kept))], dim=1)
    image_to_text = nn.functional.cross_entropy(image_logits, targets)
    return (text_to_image + image_to_text) / 2


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


def load_base(base: str, seed: int) -> tuple[CLIPModel, Path | str | None]:
    """The model to start from, and where its tokenizer and preprocessing are (a folder or a hub id), if anywhere.

    Raises:
        HubUnreachable: a hub id that is neither cached nor downloadable.
    """
    if (random := random_model(base)) is not None:
        name, weights_seed = random
        text_config, vision_config = random_configs(name)
        torch.manual_seed(seed * 1000 + weights_seed)
        config = CLIPConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), projection_dim=text_config.projection_dim)
        return CLIPModel(config), None
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is not a Hugging Face CLIP checkpoint (no config.json)")
        return CLIPModel.from_pretrained(str(path), local_files_only=True), path
    try:
        return CLIPModel.from_pretrained(base, local_files_only=True), base
    except OSError:
        if not hub_reachable():
            raise HubUnreachable(
                f"cannot download '{base}': the Hugging Face hub ({HUB_HOST}) is unreachable and the model is not in the local cache"
            ) from None
    return CLIPModel.from_pretrained(base), base


def write_companions(model: CLIPModel, source: Path | str | None, out: Path) -> tuple[Path, PreprocessConfig]:
    """Write ``tokenizer.json`` and ``preprocessor_config.json`` into ``out`` (the base's own, else CLIP's)."""
    out.mkdir(parents=True, exist_ok=True)
    if source is not None and any((Path(source) / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        tokenizer = CLIPTokenizerFast.from_pretrained(str(source), local_files_only=True)
    elif source is not None and not Path(str(source)).exists():
        tokenizer = CLIPTokenizerFast.from_pretrained(str(source))
    else:
        vocab, merges = write_clip_vocab(out / "vocab-src")
        tokenizer = CLIPTokenizerFast(vocab_file=str(vocab), merges_file=str(merges))
        shutil.rmtree(out / "vocab-src")
    tokenizer.save_pretrained(str(out))
    processor_file = out / "preprocessor_config.json"
    if source is not None and (Path(source) / "preprocessor_config.json").is_file():
        shutil.copyfile(Path(source) / "preprocessor_config.json", processor_file)
    else:
        size = int(model.config.vision_config.image_size)
        CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).to_json_file(str(processor_file))
    return out / "tokenizer.json", PreprocessConfig.from_file(processor_file)


CACHE_BYTES = 2 * 2**30  # decoded crops kept in memory (uint8, a quarter of the float pixels) across epochs


class Batches:
    """Reads, preprocesses and tokenizes batches the way the serving path does.

    Each image is decoded once (``load_crop``, the serving path's decode, resize and crop) and its
    ``uint8`` crop kept in memory while they fit in ``cache_bytes``; later epochs only normalize it
    (``normalize``: together bit-identical to ``load_pixels``). Past the cap, images are read from
    disk each time.
    """

    def __init__(
        self, images: Path, tokenizer: ClipTokenizer, config: PreprocessConfig, device: torch.device = torch.device("cpu"), cache_bytes: int = CACHE_BYTES
    ):
        self.images, self.tokenizer, self.config, self.device = images, tokenizer, config, device
        self.limits = ImageLimits()
        self.cache_bytes, self.cached_bytes = cache_bytes, 0
        self.crops: dict[str, np.ndarray] = {}

    def crop(self, file: str) -> np.ndarray:
        """The ``uint8 [crop, crop, 3]`` crop of one image, from memory when it was read before."""
        found = self.crops.get(file)
        if found is None:
            found = load_crop((self.images / file).read_bytes(), self.config, self.limits)
            if self.cached_bytes + found.nbytes <= self.cache_bytes:
                self.crops[file] = found
                self.cached_bytes += found.nbytes
        return found

    def pixels(self, files: Sequence[str]) -> torch.Tensor:
        """Preprocessed ``float32 [batch, 3, crop, crop]`` pixels on the device."""
        return torch.from_numpy(normalize(np.stack([self.crop(f) for f in files]), self.config)).to(self.device)

    def tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.encode(list(texts))
        return {"input_ids": torch.from_numpy(batch.input_ids).to(self.device), "attention_mask": torch.from_numpy(batch.attention_mask).to(self.device)}


def image_features(model: CLIPModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected image embeddings (unnormalized), the same in every transformers version."""
    return model.visual_projection(model.vision_model(pixel_values=pixel_values).pooler_output)


def text_features(model: CLIPModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Projected text embeddings (unnormalized), the same in every transformers version."""
    return model.text_projection(model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output)


def caption_queries(pairs: Sequence[Pair]) -> dict[str, set[str]]:
    """Each distinct caption → the images it was written for (the validation queries and their relevant images)."""
    relevant: dict[str, set[str]] = {}
    for pair in pairs:
        for caption in pair.captions:
            relevant.setdefault(caption, set()).add(pair.file)
    return relevant


@torch.no_grad()
def validate(model: CLIPModel, batches: Batches, pairs: list[Pair], batch_size: int = 256) -> dict[str, float | None]:
    """Text→image retrieval on ``pairs``: each distinct caption is a query, its images the relevant ones."""
    model.eval()
    images = torch.cat([image_features(model, batches.pixels([p.file for p in pairs[i : i + batch_size]])) for i in range(0, len(pairs), batch_size)])
    relevant = caption_queries(pairs)
    queries = list(relevant)
    texts = torch.cat([text_features(model, **batches.tokens(queries[i : i + batch_size])) for i in range(0, len(queries), batch_size)])
    scores = nn.functional.normalize(texts, dim=-1) @ nn.functional.normalize(images, dim=-1).t()
    order = scores.argsort(dim=1, descending=True).cpu().numpy()
    files = [p.file for p in pairs]
    rows = [query_metrics([files[j] for j in order[q]], dict.fromkeys(relevant[query], 1.0), VALIDATION_KS) for q, query in enumerate(queries)]
    return mean_metrics(rows, [*(f"P@{k}" for k in VALIDATION_KS), "R@10", "mAP"])


def _parameter_groups(model: CLIPModel, weight_decay: float) -> list[dict[str, object]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        plain = parameter.ndim < 2 or "embedding" in name or name == "logit_scale"
        (no_decay if plain else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def split(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Training and validation pairs, split by image with ``seed`` (at least one validation image)."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    held = max(1, round(len(pairs) * fraction)) if fraction > 0 else 0
    if held >= len(pairs):
        raise UserError(f"--val-fraction {fraction} leaves no training images out of {len(pairs)}")
    return [pairs[i] for i in order[held:]], [pairs[i] for i in order[:held]]


def finetune(
    captions: Path,
    images: Path,
    out: Path,
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    device: str = "auto",
    on_epoch: Callable[[Mapping[str, object]], None] | None = None,
) -> dict[str, object]:
    """Train (see the module docstring) and return the history; the best epoch's model is in ``out``.

    ``on_epoch`` is called with each epoch's record after its state is saved.

    Raises:
        UserError: bad inputs, or ``--resume`` of a run with other settings.
    """
    pairs = read_captions(captions, images)
    train, val = split(pairs, config.val_fraction, config.seed)
    torch.manual_seed(config.seed)
    model, batches = _prepare(config, images, out, device)
    optimizer, scheduler = _optimizer(model, config, len(train))
    history: dict[str, object] = {"config": asdict(config), "images": {"train": len(train), "val": len(val)}, "epochs": [], "best": None}
    state_file = out / STATE
    history, start_epoch = _resume(out, config, model, optimizer, scheduler, batches.device, history) if resume else (history, 0)
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        losses = _train_epoch(model, optimizer, scheduler, batches, train, config, epoch, progress)
        scores = validate(model, batches, val) if val else {"P@1": None, "P@10": None, "mAP": None}
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None, "seconds": round(time.perf_counter() - started, 1), **scores}
        history["epochs"].append(record)  # type: ignore[attr-defined]
        best = history["best"]
        if not val or best is None or (scores["mAP"] or 0) > (best["mAP"] or 0):  # type: ignore[index]  # without validation: the last epoch
            history["best"] = record
            _save_model(model, out)
        _print_epoch(epoch, record, scores)
        state = {"config": asdict(config), "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        _save_state(state_file, {**state, "history": history, "epoch": epoch + 1})
        if on_epoch is not None:
            on_epoch(record)
    (out / "training" / "history.json").write_text(json.dumps(history, indent=2))
    return history


def _prepare(config: TrainConfig, images: Path, out: Path, device: str) -> tuple[CLIPModel, Batches]:
    """The base model on its device with the ``--freeze`` prefixes frozen, and its batches; writes its companions under ``out``."""
    model, source = load_base(config.base, config.seed)
    tokenizer_file, preprocess = write_companions(model, source, out / "training" / "companions")
    target = pick_device(device)
    nn.Module.to(model, target)
    batches = Batches(images, ClipTokenizer(tokenizer_file, int(model.config.text_config.max_position_embeddings)), preprocess, target)
    _freeze(model, config.freeze)
    return model, batches


def _optimizer(model: CLIPModel, config: TrainConfig, train_images: int) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (weight decay on matrices only) and its schedule: warm-up, then cosine decay over every step of the run."""
    optimizer = torch.optim.AdamW(_parameter_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    steps_per_epoch = math.ceil(train_images / config.batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config.warmup_steps, total))
    return optimizer, scheduler


def _resume(
    out: Path,
    config: TrainConfig,
    model: CLIPModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    fresh: dict[str, object],
) -> tuple[dict[str, object], int]:
    """The history and the epoch that the state saved in ``out`` ended with, loaded into the model, optimizer and scheduler (on ``device``).

    Without a saved state the run starts afresh: ``fresh`` and epoch 0.

    Raises:
        UserError: the state was saved by a run with other settings.
    """
    state_file = out / STATE
    if not state_file.is_file():
        print(f"nothing to resume in {out}: starting afresh")
        return fresh, 0
    state = torch.load(state_file, weights_only=False, map_location=device)
    saved = {**asdict(TrainConfig()), **state["config"]}  # a setting added since the state was saved: its default, which that run had
    if saved != asdict(config):
        raise UserError(f"{state_file} was trained with {saved}; resume with the same settings, or start afresh without --resume")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    history, start_epoch = state["history"], state["epoch"]
    print(f"resuming from {state_file} after epoch {start_epoch}")
    return history, start_epoch


def _print_epoch(epoch: int, record: Mapping[str, object], scores: Mapping[str, float | None]) -> None:
    """The closing line of an epoch (``epoch`` counts from 0): its loss and, with a validation split, its scores."""
    shown = ", ".join(f"{name} {value:.3f}" for name, value in scores.items() if value is not None and name in ("P@1", "P@10", "mAP"))
    print(f"epoch {epoch + 1}: loss {record['loss']:.4f}" + (f", validation {shown}" if shown else ", no validation split (--val-fraction 0)"), flush=True)


def _freeze(model: CLIPModel, prefixes: Sequence[str]) -> None:
    for name, parameter in model.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            parameter.requires_grad_(False)
    if prefixes and all(p.requires_grad for p in model.parameters()):
        raise UserError(f"--freeze {list(prefixes)} matches no parameter (names start with text_model., vision_model., ...)")


def _train_epoch(
    model: CLIPModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Batches,
    train: list[Pair],
    config: TrainConfig,
    epoch: int,
    progress: bool,
) -> list[float]:
    """One pass over ``train``; returns each step's loss."""
    model.train()
    rng = np.random.default_rng([config.seed, epoch])  # the epoch's order, captions and negatives, the same after a resume
    order = rng.permutation(len(train))
    picks = [train[i].captions[int(rng.integers(len(train[i].captions)))] for i in order]
    negatives = _hard_negatives(train, order, picks, rng) if config.hard_negatives else [None] * len(picks)
    bar = tqdm(total=len(train), desc=f"epoch {epoch + 1}/{config.epochs}", unit="img", disable=not progress, dynamic_ncols=True)
    losses: list[float] = []
    started = time.perf_counter()
    for first in range(0, len(order), config.batch_size):
        rows, batch = order[first : first + config.batch_size], slice(first, first + config.batch_size)
        if len(rows) < 2:
            continue  # a contrastive batch needs two pairs
        pixels = batches.pixels([train[i].file for i in rows])
        if config.augment:
            pixels = augment(pixels, np.random.default_rng([config.seed, epoch, first]), batches.config)
        loss = _batch_loss(model, batches, pixels, picks[batch], negatives[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        losses.append(float(loss.detach()))
        bar.update(len(rows))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", img_s=f"{bar.n / (time.perf_counter() - started):.0f}")
    bar.close()
    return losses


def _hard_negatives(train: list[Pair], order: np.ndarray, picks: list[str], rng: np.random.Generator) -> list[str | None]:
    """The hard negative of each pick (``picks[n]`` is a caption of ``train[order[n]]``), or None.

    Only texts that are captions of ``train`` may be negatives: a combination that the training set
    holds out (``t2i dataset shapes --held-out``) never reaches training, not even as a negative.
    """
    known = {caption for pair in train for caption in pair.captions}
    return [hard_negative(text, rng, counts_stated(train[i].captions), known) for text, i in zip(picks, order, strict=True)]


def _batch_loss(model: CLIPModel, batches: Batches, pixels: torch.Tensor, texts: Sequence[str], negatives: Sequence[str | None]) -> torch.Tensor:
    """The loss of one batch: row ``i`` is ``pixels[i]`` with ``texts[i]`` and the hard negative ``negatives[i]`` (or None).

    Each distinct negative not among ``texts`` is scored against the images it was made for only:
    it is false of them, but may be true of another image of the batch (``three red circles``, made
    from ``two red circles``, of an image captioned ``a photo of three red circles``).
    """
    extra = list(dict.fromkeys(n for n in negatives if n is not None and n not in texts))
    image_embeds = image_features(model, pixels)
    text_embeds = text_features(model, **batches.tokens([*texts, *extra]))
    positives, hard = text_embeds[: len(texts)], text_embeds[len(texts) :]
    made_for = torch.tensor([[negative == text for text in extra] for negative in negatives], dtype=torch.bool, device=image_embeds.device)
    return contrastive_loss(image_embeds, positives, model.logit_scale, texts, hard if extra else None, extra, made_for.view(len(texts), len(extra)))


def _save_state(path: Path, state: dict[str, object]) -> None:
    """Write the training state; a kill while saving keeps the previous one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def _save_model(model: CLIPModel, out: Path) -> None:
    model.save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "preprocessor_config.json"):
        if (out / "training" / "companions" / name).is_file():
            shutil.copyfile(out / "training" / "companions" / name, out / name)


def command(args: argparse.Namespace) -> int:
    """Run ``t2i finetune``."""
    random.seed(args.seed)
    history = finetune(args.captions, args.images, args.out, config_from(args), resume=args.resume, device=args.device)
    best: dict[str, object] = history["best"]  # type: ignore[assignment]
    score = f" (validation mAP {best['mAP']:.3f})" if best.get("mAP") is not None else ""
    print(f"best epoch {best['epoch']}{score} written to {args.out}; export it with: t2i export --model {args.out}")
    return 0
