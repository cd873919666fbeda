"""The deployment tools of ``.venv-deploy`` (requirements-deploy.txt) that the tests run: podman-compose, check-jsonschema."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def deploy_tool(name: str) -> str:
    """The path of ``name`` in ``.venv-deploy``; fails with what to run when it is missing."""
    path = ROOT / ".venv-deploy" / "bin" / name
    assert path.exists(), f"{path} is missing: 'make install' builds .venv-deploy from requirements-deploy.txt"
    return str(path)
