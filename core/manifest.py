"""The export manifest: which model filled a model repository, and how to feed it.

``t2i export`` writes ``manifest.json`` at the root of the Triton model repository; the gateway
and the reindex job read it to tokenize and preprocess exactly as the model expects, and to stamp
the model id and weights checksum on every Milvus collection they fill.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
PRECISIONS = ("fp32", "fp16", "int8")
AUTO = "auto"  # int8 on CPUs with VNNI or AMX, fp32 elsewhere (resolve_precision)
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
MANIFEST_FILE = "manifest.json"
TEXT_MODEL = "clip_text"
VISION_MODEL = "clip_vision"
# Tokenizer and preprocessing files live in the text and vision models' version folders.
TOKENIZER_FILE = "tokenizer.json"
PREPROCESSOR_FILE = "preprocessor_config.json"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` is not readable)."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())


def resolve_precision(precision: str, flags: set[str] | None = None) -> str:
    """``auto`` → ``int8`` where the CPU has VNNI or AMX, else ``fp32``; anything else unchanged.

    int8 towers are 2–3× faster only with those instructions, and on the trained shapes model they
    scored the same P@10 as fp32 (docs/relevance.md); without them int8 buys little.
    """
    if precision != AUTO:
        return precision
    return "int8" if (cpu_flags() if flags is None else flags) & set(INT8_FLAGS) else "fp32"


@dataclass(frozen=True)
class Calibration:
    """A relevance threshold for one kind of query, picked by ``t2i eval --calibrate`` on judged queries.

    Attributes:
        threshold: Hits scoring below it are dropped by ``CUTOFF_CALIBRATED``.
        metric: What it maximized: ``f1``, or ``recall at precision >= P``.
        precision: Precision of the cut hits on the calibration queries.
        recall: Their recall (of the relevant hits the uncut search returned).
        f1: Their F1.
        queries: How many queries it was picked on.
        held_out_precision: Precision of the cut on the held-out queries (None when there were none).
        held_out_recall: Recall of the cut on the held-out queries.
        held_out_queries: How many queries were held out.
        depth: Hits asked per query.
        written_at: When it was written (UTC, ISO 8601).
    """

    threshold: float
    metric: str
    precision: float
    recall: float
    f1: float
    queries: int
    held_out_precision: float | None = None
    held_out_recall: float | None = None
    held_out_queries: int = 0
    depth: int = 0
    written_at: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """A calibration from its JSON object (unknown keys, from a newer writer, are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass(frozen=True)
class Manifest:
    """What an exported model repository holds.

    Attributes:
        model_id: Hub id, local path or ``random:<config>`` of the source checkpoint.
        checksum: SHA-256 over the weights of both towers (names, shapes and bytes).
        dimension: Length of the projected embeddings.
        precision: ``fp32``, ``fp16`` or ``int8``.
        context_length: Maximum number of tokens, special tokens included (77 for CLIP).
        image_size: Side of the square model input in pixels.
        random_weights: True when the weights are random (rankings are meaningless).
        version: Model version folder inside the repository.
        parity: Minimum cosine similarity to PyTorch per tower, measured at export.
        calibration: Relevance thresholds by query kind (``text``), as ``Calibration`` objects in
            JSON; empty until ``t2i eval --calibrate`` writes one (manifests without it still read).
    """

    model_id: str
    checksum: str
    dimension: int
    precision: str
    context_length: int
    image_size: int
    random_weights: bool
    version: int = 1
    parity: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)

    def calibration_for(self, query_kind: str) -> Calibration | None:
        """The calibrated threshold for ``query_kind`` queries, or None."""
        data = self.calibration.get(query_kind)
        return Calibration.from_dict(data) if data else None

    def write(self, repo: Path) -> Path:
        """Write the manifest as JSON at the root of ``repo``."""
        path = repo / MANIFEST_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, repo: Path) -> Manifest:
        """Read the manifest of an exported repository.

        Raises:
            FileNotFoundError: with a hint to run the export when the file is missing.
        """
        path = Path(repo) / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: export a model first ('t2i export --out {repo}')")
        return cls(**json.loads(path.read_text()))

    def version_dir(self, repo: Path, model: str) -> Path:
        """The version folder of ``model`` (``clip_text`` or ``clip_vision``) in ``repo``."""
        return Path(repo) / model / str(self.version)

    def write_versioned(self, repo: Path) -> None:
        """Write the manifest into both towers' version folders, then at the root (the newest export).

        The version folders' copies let one repository serve several model versions side by side
        (a rollout); the root copy names the version that new indexes are filled with.
        """
        previous = Manifest.read(repo) if (Path(repo) / MANIFEST_FILE).is_file() else None
        if previous is not None and previous.version != self.version and previous.version_dir(repo, TEXT_MODEL).is_dir():
            previous._write_copies(repo)  # an export from before per-version manifests: keep its version servable
        self._write_copies(repo)
        self.write(repo)

    def _write_copies(self, repo: Path) -> None:
        for model in (TEXT_MODEL, VISION_MODEL):
            path = self.version_dir(repo, model) / MANIFEST_FILE
            if path.parent.is_dir():
                path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read_version(cls, repo: Path, version: int) -> Manifest:
        """The manifest of one model version (its text tower's copy, else the root one if it names that version).

        Raises:
            FileNotFoundError: the repository holds no such version.
        """
        path = Path(repo) / TEXT_MODEL / str(version) / MANIFEST_FILE
        if path.is_file():
            return cls(**json.loads(path.read_text()))
        root = cls.read(repo)
        if root.version != version:
            raise FileNotFoundError(f"{repo} holds no model version {version} (no {path})")
        return root


def write_calibration(repo: Path, version: int, query_kind: str, calibration: Calibration) -> list[Path]:
    """Store ``calibration`` in the manifest of model ``version``: its copies in the version folders, and the root one if it names that version.

    Each file is replaced whole (written beside it, then renamed), so a gateway rescanning meanwhile
    reads the old manifest or the new one, never half of one. Returns the files written.
    """
    repo = Path(repo)
    manifest = Manifest.read_version(repo, version)
    updated = replace(manifest, calibration={**manifest.calibration, query_kind: asdict(calibration)})
    text = json.dumps(asdict(updated), indent=2, sort_keys=True) + "\n"
    targets = [updated.version_dir(repo, model) / MANIFEST_FILE for model in (TEXT_MODEL, VISION_MODEL)]
    targets = [path for path in targets if path.is_file()]
    if (repo / MANIFEST_FILE).is_file() and Manifest.read(repo).version == version:
        targets.append(repo / MANIFEST_FILE)
    for path in targets:
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(text)
        os.replace(partial, path)
    return targets


def served_versions(repo: Path) -> list[int]:
    """The model versions in ``repo`` whose export finished (both towers' folders and a manifest), oldest first.

    A version folder without a manifest is still being written (``t2i export`` writes the
    manifest last) or predates per-version manifests; the root manifest vouches for its own version.
    """
    repo = Path(repo)
    root_version = Manifest.read(repo).version if (repo / MANIFEST_FILE).is_file() else None
    versions = []
    text_dir = repo / TEXT_MODEL
    for folder in text_dir.iterdir() if text_dir.is_dir() else ():
        if not folder.name.isdigit() or not (repo / VISION_MODEL / folder.name).is_dir():
            continue
        if (folder / MANIFEST_FILE).is_file() or int(folder.name) == root_version:
            versions.append(int(folder.name))
    return sorted(versions)
