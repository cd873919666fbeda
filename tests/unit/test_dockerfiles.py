"""The images build from one truth: a wheel of pyproject.toml's distribution, never package folders named one by one."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
# The product's images (the others are the local CPU Triton and Milvus, which hold no project code).
PROJECT_IMAGES = [ROOT / "docker" / "runtime.Dockerfile", ROOT / "docker" / "tools.Dockerfile"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CLIENT = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())


def load(name: str) -> ModuleType:
    """A script of docker/ as a module (docker/ is no package)."""
    spec = importlib.util.spec_from_file_location(f"docker_{name}", ROOT / "docker" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def package_folders() -> set[str]:
    """The top-level folders that hold the distributions' packages: the server's, ``client/`` and ``protos/``.

    The client's ``text2image`` is a link into ``protos/``.
    """
    setuptools = PYPROJECT["tool"]["setuptools"]
    package_dir = setuptools.get("package-dir", {})
    folders = set()
    for package in setuptools["packages"]:
        top = package.split(".")[0]
        folders.add(Path(package_dir.get(top, top)).parts[0])
    for package in CLIENT["tool"]["setuptools"]["packages"]:
        folder = (ROOT / "client" / package.split(".")[0]).resolve()
        folders.add(folder.relative_to(ROOT).parts[0])
    return folders


def instructions(text: str) -> list[tuple[str, list[str]]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile, continuation lines joined and comments dropped."""
    logical = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    result = []
    for line in logical.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.split()))
    return result


def copied_package_folders(text: str) -> list[str]:
    """The package folders that COPY or ADD instructions of ``text`` name (sources from the build context)."""
    folders = package_folders()
    named = []
    for word, args in instructions(text):
        if word not in ("COPY", "ADD") or any(arg.startswith("--from") for arg in args):
            continue
        sources = [arg for arg in args if not arg.startswith("--")][:-1]
        for source in sources:
            parts = Path(source.strip('"[],')).parts
            if parts and parts[0] in folders:
                named.append(parts[0])
    return named


def test_package_folders_come_from_pyproject() -> None:
    # The rule below knows every folder the wheel is built from, the protos' folder included.
    assert {"core", "gateway", "relevance", "protos", "web"} <= package_folders()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_no_dockerfile_names_package_folders(dockerfile: Path) -> None:
    assert copied_package_folders(dockerfile.read_text()) == [], f"{dockerfile.name} copies package folders one by one; copy the context and build the wheel"


def test_the_rule_sees_folders_named_one_by_one() -> None:
    """The images before this rule: nine folders copied one by one (relevance left out)."""
    old = "FROM python:3.11.11-slim-bookworm AS build\nCOPY pyproject.toml constraints.txt README.md ./\nCOPY protos protos\nCOPY core core\nCOPY gateway gateway\nCOPY --from=build /opt/venv /opt/venv\n"
    assert copied_package_folders(old) == ["protos", "core", "gateway"]
    assert copied_package_folders("COPY . .\nCOPY docker/requirements.py model_repository ./\n") == []


@pytest.mark.parametrize("dockerfile", PROJECT_IMAGES, ids=lambda path: path.name)
def test_dockerfile_builds_and_installs_the_wheel(dockerfile: Path) -> None:
    steps = instructions(dockerfile.read_text())
    runs = [" ".join(args) for word, args in steps if word == "RUN"]
    assert ("COPY", [".", "."]) in steps, "the wheel is built from the whole context (.dockerignore decides)"
    assert any("pip wheel" in run and "--no-deps" in run and "./client" in run for run in runs), "the client's wheel is built with the server's"
    installs = [run for run in runs if "text2image-search[${EXTRAS}]" in run]
    assert installs and all("-c " in run and "--no-index" in run for run in installs), (
        "the wheel is installed with its extras, pinned, from the dependency layer"
    )
    assert any("requirements.py pyproject.toml" in run and "-c constraints.txt" in run for run in runs), "dependencies come from pyproject.toml, pinned"


def stub_steps(text: str) -> list[str]:
    """The RUN steps of ``text`` that generate protobuf stubs themselves (protoc, grpc_tools or build_stubs.py)."""
    return [" ".join(args) for word, args in instructions(text) if word == "RUN" and re.search(r"build_stubs|protoc|grpc_tools", " ".join(args))]


@pytest.mark.parametrize("dockerfile", PROJECT_IMAGES, ids=lambda path: path.name)
def test_the_stubs_come_from_the_build_backend(dockerfile: Path) -> None:
    """``pip wheel`` runs setup.py's build_py, which generates the stubs, as for any wheel: no step of its own makes them."""
    steps = instructions(dockerfile.read_text())
    runs = [" ".join(args) for word, args in steps if word == "RUN"]
    assert stub_steps(dockerfile.read_text()) == [], f"{dockerfile.name} generates the stubs itself; the build backend does"
    wheels = [run for run in runs if "pip wheel" in run]
    assert wheels
    if any("--no-build-isolation" in run for run in wheels):
        # Then the build backend finds its requirements (grpcio-tools, setuptools) only where the Dockerfile installs them.
        built_with = next(run for run in runs if "pip install" in run and "grpcio-tools" in run)
        build = [*PYPROJECT["build-system"]["requires"], *CLIENT["build-system"]["requires"]]
        names = [re.split(r"[=<>]", requirement)[0] for requirement in build]
        assert all(name in built_with for name in names) and "-c constraints.txt" in built_with, built_with
    # The context carries no stubs generated on the host, so the image's are the backend's.
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    for stub in ("protos/text2image/v1/text2image_pb2.py", "protos/text2image/v1/text2image_pb2_grpc.py", "protos/text2image/v1/text2image_pb2.pyi"):
        assert any(fnmatch.fnmatch(stub, pattern) for pattern in patterns), stub
    assert not any(fnmatch.fnmatch(kept, pattern) for kept in ("setup.py", "protos/build_stubs.py") for pattern in patterns)


def test_the_stub_rule_sees_a_step_of_its_own() -> None:
    """The images before the build backend made the stubs: build_stubs.py ran before pip wheel."""
    old = "FROM buildtools AS wheel\nCOPY . .\nRUN /opt/build/bin/python protos/build_stubs.py \\\n    && /opt/build/bin/pip wheel --no-build-isolation --no-deps --wheel-dir /wheels .\n"
    assert len(stub_steps(old)) == 1
    assert len(stub_steps("RUN python -m grpc_tools.protoc -Iprotos --python_out=protos x.proto\n")) == 1
    assert stub_steps("RUN pip wheel --no-deps .\n") == []


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_base_image_is_an_argument_with_the_upstream_default(dockerfile: Path) -> None:
    steps = instructions(dockerfile.read_text())
    first_from = next(i for i, (word, _) in enumerate(steps) if word == "FROM")
    base_args = [args[0] for word, args in steps[:first_from] if word == "ARG" and args[0].startswith("BASE_IMAGE=")]
    assert len(base_args) == 1 and re.fullmatch(r"BASE_IMAGE=python:3\.11\.\d+-slim-bookworm", base_args[0]), base_args
    stages = {args[2] for word, args in steps if word == "FROM" and len(args) == 3 and args[1].upper() == "AS"}
    for word, args in steps:
        if word == "FROM":
            assert args[0] == "${BASE_IMAGE}" or args[0] in stages, f"FROM {args[0]}: the base is the BASE_IMAGE argument"


def test_dockerignore_keeps_every_package_folder() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    ignored = {folder for folder in package_folders() for pattern in patterns if fnmatch.fnmatch(folder, pattern)}
    assert ignored == set()
    assert "README.md" not in patterns and "pyproject.toml" not in patterns


def test_requirements_are_pyprojects(tmp_path: Path) -> None:
    requirements = load("requirements").requirements
    listed = requirements(ROOT / "pyproject.toml", ["gateway", "web"])
    project = PYPROJECT["project"]
    every = [*project["dependencies"], *project["optional-dependencies"]["gateway"], *project["optional-dependencies"]["web"]]
    # The client is built from the repository in the wheel stage (no index has it); its dependencies are the server's too.
    assert listed == [requirement for requirement in every if not requirement.startswith("text2image-client")]
    assert len(listed) == len(every) - 1 and "grpcio>=1.81.1" in listed
    assert load("requirements").name_of("Text2Image_Client[x] ==0.1.0") == "text2image-client"
    assert "torch==2.13.0" in requirements(ROOT / "pyproject.toml", ["export"])
    with pytest.raises(SystemExit, match="unknown extras"):
        requirements(ROOT / "pyproject.toml", ["gateway", "no-such-extra"])


def test_build_mounts_the_hosts_local_pip_folders(tmp_path: Path) -> None:
    build = load("build")
    (tmp_path / "pypi" / "simple").mkdir(parents=True)
    (tmp_path / "wheels").mkdir()
    settings = {
        "extra-index-url": f"file://{tmp_path}/pypi/simple https://example.invalid/simple",
        "find-links": f"{tmp_path}/wheels {tmp_path}/missing",
        "index-url": "https://pypi.org/simple",
    }
    # A simple index links to files beside its folder: its parent is mounted; remote indexes and missing folders are not.
    assert build.local_folders(settings) == [tmp_path / "pypi", tmp_path / "wheels"]
