"""The base install (no extras) from a wheel built from a clean copy of the repository.

The wheel is built with build isolation, as ``pip install .`` builds it from a clone: the build
backend (setup.py) must make the protobuf stubs itself. The base environment's ``t2i`` then starts,
answers ``info`` against the session's stack, and names the extra that ``serve`` needs.
Cost here: see the printed seconds (about 15 s for the wheel, under a minute for the environment).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from devstack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of HEAD, built from ``git archive`` (no stubs, no egg-info, nothing untracked)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    assert not list((source / "protos").rglob("*_pb2*.py")), "the clean copy holds no generated stubs"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"wheel built from a clean copy in {time.monotonic() - started:.0f} s")
    (built,) = (work / "dist").glob("text2image_search-*.whl")
    return built


def test_the_wheel_holds_the_stubs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for stub in ("text2image/v1/text2image_pb2.py", "text2image/v1/text2image_pb2_grpc.py", "text2image/v1/text2image_pb2.pyi"):
        assert stub in names, f"{stub} missing from {wheel.name}"
    assert "t2i/cli.py" in names and "relevance/shapes.py" in names and not any(name.startswith("bench/") for name in names)


@pytest.fixture(scope="module")
def base_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and the base dependencies only, pinned by constraints.txt.

    (tqdm and fsspec, of the reindex extra, come with tokenizers through huggingface-hub.)
    """
    venv = tmp_path_factory.mktemp("base-env") / "venv"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-c", str(ROOT / "constraints.txt"), str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"base environment installed in {time.monotonic() - started:.0f} s")
    return venv


def t2i(venv: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The base environment's ``t2i``, run outside the repository (so nothing is imported from it)."""
    clean = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / "t2i"), *args], capture_output=True, text=True, timeout=120, env={**clean, **(env or {})}, cwd=venv)


def test_the_base_install_lacks_the_extras(base_env: Path) -> None:
    code = "import importlib.util as u; print([m for m in ('grpc_health', 'grpc_reflection', 'torch', 'transformers', 'starlette') if u.find_spec(m)])"
    result = subprocess.run([str(base_env / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True, cwd=base_env)
    assert result.stdout.strip() == "[]"


def test_help_and_search_help_start(base_env: Path) -> None:
    for args in (["--help"], ["search", "--help"], ["info", "--help"]):
        result = t2i(base_env, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert "usage: t2i" in result.stdout


def test_serve_names_the_gateway_extra(base_env: Path) -> None:
    result = t2i(base_env, "serve")
    assert result.returncode == 2, result.stderr
    assert "pip install 'text2image-search[gateway]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_info_against_the_stack(base_env: Path, stack: LocalStack) -> None:
    result = t2i(base_env, "info", "--address", stack.gateway_address, env={"T2I_TOKEN_FILE": str(stack.tokens.client_file("read"))})
    assert result.returncode == 0, result.stderr
    assert f'alias: "{stack.alias}"' in result.stdout and "dimension:" in result.stdout
