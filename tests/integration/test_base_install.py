"""The base install (no extras) from a wheel built from a clean copy of the repository.

The wheels (the server's and text2image-client's, which it depends on) are built with build isolation, as
``pip install ./client .`` builds them from a clone: the client's build backend (client/setup.py) must
make the protobuf stubs itself. The base environment's ``t2i`` then starts,
answers ``info`` against the session's stack, and names the extra that ``serve`` needs.
The gateway-only environment (the wheel with the runtime image's extras, no torch or transformers)
runs the unit tests that are not marked ``torch``, from the same archive, importing the wheel.
Cost here: see the printed seconds (about 10 s for the wheel, under a minute for the base
environment, about a minute for the gateway-only environment and 90 s for its unit run; 2026-12-01).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from devstack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def extract(archive: bytes, folder: Path) -> Path:
    """The archive unpacked into a new ``folder``."""
    folder.mkdir()
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


@pytest.fixture(scope="module")
def wheel(head_wheel: Path) -> Path:
    """The server's wheel of HEAD, built from a clean copy (``git archive``) with the client's beside it (``head_wheel``, once per session)."""
    return head_wheel


def client_wheel(wheel: Path) -> Path:
    """text2image-client's wheel, built beside the server's."""
    (built,) = wheel.parent.glob("text2image_client-*.whl")
    return built


def test_the_client_wheel_holds_the_stubs_and_the_server_wheel_none(wheel: Path) -> None:
    names = set(zipfile.ZipFile(client_wheel(wheel)).namelist())
    for stub in ("text2image/v1/text2image_pb2.py", "text2image/v1/text2image_pb2_grpc.py", "text2image/v1/text2image_pb2.pyi", "text2image/v1/text2image.proto"):  # fmt: skip
        assert stub in names, f"{stub} missing from the client's wheel"
    assert "text2image_client/client.py" in names and "text2image_client/py.typed" in names
    server = set(zipfile.ZipFile(wheel).namelist())
    assert "t2i/cli.py" in server and "relevance/shapes.py" in server and not any(name.startswith("bench/") for name in server)
    assert not any(name.startswith(("text2image/", "text2image_client/")) for name in server), "the server's wheel packages the proto again"


def pip_install(venv: Path, find_links: Path | None = None) -> list[str]:
    """``pip install`` of ``venv`` pinned by constraints.txt, finding the client's wheel in ``find_links``."""
    links = ["--find-links", str(find_links)] if find_links else []
    return [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-c", str(ROOT / "constraints.txt"), *links]


@pytest.fixture(scope="module")
def base_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and the base dependencies only, pinned by constraints.txt.

    (tqdm and fsspec, of the reindex extra, come with tokenizers through huggingface-hub.)
    """
    venv = tmp_path_factory.mktemp("base-env") / "venv"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run(
        [*pip_install(venv, wheel.parent), str(wheel)],
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


# --- The gateway-only environment runs the unit tests not marked torch -------------------------------

# The runtime image's extras (docker/runtime.Dockerfile, make gateway-env): no torch, transformers or optimum.
GATEWAY_EXTRAS = "gateway,reindex,web"
# The unit tests' own tools, from the dev extra (pinned by constraints.txt): pytest and its plugins, and what
# the tests check with (certificates, starlette's test client, the stub generator's version).
TEST_TOOLS = ("pytest", "pytest-asyncio", "pytest-timeout", "cryptography", "httpx", "grpcio-tools")
PRODUCT = ("core", "inference", "search", "gateway", "reindex", "web", "t2i", "devstack", "text2image", "text2image_client")

# A pytest plugin (outside the checkout) that writes where the packages of the run came from.
ORIGIN_PROBE = """
import json, os, sys


def pytest_sessionfinish(session):
    names = os.environ["T2I_PROBE_NAMES"].split(",")
    found = {name: getattr(sys.modules[name], "__file__", None) or next(iter(sys.modules[name].__path__)) for name in names if name in sys.modules}
    heavy = sorted(name for name in ("torch", "transformers", "optimum", "onnx") if name in sys.modules)
    with open(os.environ["T2I_PROBE_OUT"], "w") as out:
        json.dump({"modules": found, "heavy": heavy}, out)
"""


@pytest.fixture(scope="module")
def gateway_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel, the runtime extras and the unit tests' tools, pinned by constraints.txt."""
    venv = tmp_path_factory.mktemp("gateway-env") / "venv"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = pip_install(venv, wheel.parent)
    result = subprocess.run([*pip, f"{wheel}[{GATEWAY_EXTRAS}]", *TEST_TOOLS], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"gateway-only environment installed in {time.monotonic() - started:.0f} s")
    return venv


def test_the_gateway_only_environment_lacks_torch_and_transformers(gateway_env: Path) -> None:
    code = "import importlib.util as u; print([m for m in ('torch', 'transformers', 'optimum', 'onnx', 'open_clip') if u.find_spec(m)])"
    result = subprocess.run([str(gateway_env / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True, cwd=gateway_env)
    assert result.stdout.strip() == "[]"


def test_the_unit_tests_not_marked_torch_pass_in_the_gateway_only_environment(gateway_env: Path, head_archive: bytes, tmp_path: Path) -> None:
    """The unit tests of HEAD's archive, run by the gateway-only environment against the installed wheel.

    ``-P`` keeps the working directory off ``sys.path`` and ``--import-mode=append`` puts the checkout after
    site-packages, so ``tests`` and ``bench`` come from the checkout and the product's packages from the wheel
    (the probe plugin records which); the checkout's sources stay readable for the tests that read them.
    """
    checkout = extract(head_archive, tmp_path / "checkout")
    (checkout / ".venv-deploy").symlink_to(ROOT / ".venv-deploy")  # podman-compose for test_compose, in its own venv
    (checkout / "tools" / "node_modules").symlink_to(ROOT / "tools" / "node_modules")  # buf for test_proto_contract (npm ci, make install)
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "t2i_origin_probe.py").write_text(ORIGIN_PROBE)
    clean = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # PYTHONSAFEPATH (what -P sets) is inherited: the servers and scripts the tests start from the checkout import the wheel too.
    env = {
        **clean,
        "PYTHONSAFEPATH": "1",
        "PYTHONPATH": str(probe),
        "T2I_PROBE_OUT": str(tmp_path / "origin.json"),
        "T2I_PROBE_NAMES": ",".join((*PRODUCT, "tests", "bench")),
    }
    args = ["tests/unit", "-m", "not torch", "-q", "-p", "no:cacheprovider", "--import-mode=append", "-p", "t2i_origin_probe"]
    # What this repository's own environment collects with the same selection: every one of them must pass there.
    listing = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/unit", "-m", "not torch", "--collect-only", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=checkout,
        timeout=600,
    )
    collected = re.search(r"(\d+)(?:/\d+)? tests? collected", listing.stdout)
    assert collected, listing.stdout[-2000:] + listing.stderr[-2000:]
    python = str(gateway_env / "bin" / "python")
    started = time.monotonic()
    result = subprocess.run([python, "-P", "-m", "pytest", *args], capture_output=True, text=True, env=env, cwd=checkout, timeout=1500)
    print(f"unit tests in the gateway-only environment: {time.monotonic() - started:.0f} s")
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) == int(collected.group(1)), f"{summary}; the full environment collects {collected.group(1)}"
    assert re.search(r"\d+ deselected", summary), f"nothing marked torch was left out: {summary}"
    assert not re.search(r"failed|error|skipped", summary), summary
    print(summary)

    origin = json.loads((tmp_path / "origin.json").read_text())
    site = str(gateway_env / "lib")
    assert {"core", "gateway", "search", "inference", "reindex", "web", "text2image"} <= set(origin["modules"]), origin["modules"]
    outside = {name: path for name, path in origin["modules"].items() if name in PRODUCT and not path.startswith(site)}
    assert outside == {}, f"imported from outside the environment: {outside}"
    assert origin["modules"]["tests"].startswith(str(checkout)) and origin["heavy"] == []
