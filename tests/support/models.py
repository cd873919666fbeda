"""Model repositories for tests: a rollout's next version, exported beside the served one."""

from __future__ import annotations

import shutil
from pathlib import Path

from core.manifest import TEXT_MODEL, VISION_MODEL, Manifest, served_versions
from core.records import ModelStamp


def export_beside(repo: Path, model_id: str, checksum: str) -> ModelStamp:
    """Copy the oldest version of ``repo`` as the next version with another model (a rollout's new export)."""
    first = Manifest.read_version(repo, served_versions(repo)[0])
    manifest = Manifest(model_id, checksum, first.dimension, "fp32", 77, 224, True, version=max(served_versions(repo)) + 1)
    for model in (TEXT_MODEL, VISION_MODEL):
        shutil.copytree(first.version_dir(repo, model), manifest.version_dir(repo, model))
    manifest.write_versioned(repo)
    return ModelStamp.of(manifest)
