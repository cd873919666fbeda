"""The settings of ``t2i finetune`` and its command-line options, without importing torch (the CLI parses them everywhere)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainConfig:
    """Everything that decides the trained weights (with the data): saved with every checkpoint."""

    base: str = "small"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 50
    seed: int = 0
    val_fraction: float = 0.1
    freeze: list[str] = field(default_factory=list)
    hard_negatives: bool = False
    augment: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``t2i finetune``."""
    defaults = TrainConfig()
    parser.add_argument("--base", default=defaults.base, help="hub id, local CLIPModel folder, or random/tiny/small (random weights) (default small)")
    parser.add_argument("--captions", type=Path, required=True, help="CSV with file,caption rows (a file may have several captions)")
    parser.add_argument("--images", type=Path, required=True, help="folder the captions' file paths are relative to")
    parser.add_argument("--out", type=Path, required=True, help="output CLIPModel folder (t2i export --model OUT takes it)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate (after warm-up); use about 1e-5 for a pretrained base")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction, help="share of the images held out for validation (default 0.1)")
    parser.add_argument("--freeze", action="append", default=[], metavar="PREFIX", help="freeze parameters whose name starts with PREFIX (repeatable)")
    parser.add_argument(
        "--hard-negatives",
        action="store_true",
        help="add a minimally edited false caption per caption (colours swapped, count changed) to each batch as an extra negative (NegCLIP); shapes-grammar captions only",
    )
    parser.add_argument(
        "--augment", action="store_true", help="flip, turn, shrink and brightness/contrast-jitter the training images (counts, colours and shapes unchanged)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/training/state.pt")
    parser.add_argument("--device", default="auto", help="auto (the GPU if torch sees one), cpu, cuda, cuda:1, ...")


def config_from(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` of parsed ``t2i finetune`` arguments."""
    return TrainConfig(
        base=args.base, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, seed=args.seed, val_fraction=args.val_fraction, freeze=list(args.freeze),
        hard_negatives=args.hard_negatives, augment=args.augment,
    )  # fmt: skip
