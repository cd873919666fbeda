"""The gateway and the reindex job load no model toolchain, so their image can leave it out."""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

HEAVY = ("torch", "transformers", "optimum", "onnx", "onnxruntime")


@pytest.mark.parametrize("module", ["gateway.server", "reindex.main", "search.engine", "web.server"])
def test_import_loads_no_model_toolchain(module: str) -> None:
    code = f"import sys, {module}; print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"importing {module} loaded {result.stdout.strip()}"


@pytest.mark.torch  # it imports the export's torch and transformers
def test_the_check_sees_a_heavy_import() -> None:
    """The probe above would notice torch (so an empty answer means something)."""
    code = f"import sys, export.checkpoint; print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "torch" in result.stdout and "transformers" in result.stdout


# --- One list of packages, and a CLI that starts without the extras ---------------------------------

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# text2image-client (client/): the stubs (text2image.v1) and the typed client (text2image_client).
CLIENT = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())
# Root packages of the import contracts that the distribution does not ship (benchmarks run from the clone).
NOT_SHIPPED = {"bench"}
# Generated code that mypy and the import contracts leave alone (protos/text2image, shipped by the client).
GENERATED = {"text2image"}


def shipped_top_level() -> set[str]:
    """The distribution's top-level packages: ``[tool.setuptools] packages``, the one list."""
    return {package.split(".")[0] for package in PYPROJECT["tool"]["setuptools"]["packages"]}


def client_top_level() -> set[str]:
    """The client distribution's top-level packages (client/pyproject.toml)."""
    return {package.split(".")[0] for package in CLIENT["tool"]["setuptools"]["packages"]}


def test_every_package_list_is_the_distributions() -> None:
    from core.logs import PROJECT_LOGGERS

    shipped, client = shipped_top_level(), client_top_level()
    tool = PYPROJECT["tool"]
    assert client == GENERATED | {"text2image_client"} and client.isdisjoint(shipped), "the client ships the stubs and text2image_client, the server neither"
    assert set(PROJECT_LOGGERS) == shipped | GENERATED, "core/logs.py PROJECT_LOGGERS"
    assert set(tool["mypy"]["files"]) == shipped | NOT_SHIPPED | {"tests", "client/text2image_client"}, "[tool.mypy] files (and bench/, tests/, the client)"
    assert set(tool["importlinter"]["root_packages"]) == shipped | NOT_SHIPPED, "[tool.importlinter] root_packages"
    assert set(tool["ruff"]["lint"]["isort"]["known-first-party"]) == shipped | client | NOT_SHIPPED | {"tests"}, "isort known-first-party"
    layered = {name.strip() for layer in tool["importlinter"]["contracts"][0]["layers"] for name in layer.split("|")}
    assert layered == shipped | NOT_SHIPPED, "the layers contract names every root package"
    assert NOT_SHIPPED.isdisjoint(shipped)


# --- The client distribution: the stubs and the typed client, on grpcio and protobuf alone ------------


def requirements_of(pyproject: dict[str, Any]) -> dict[str, SpecifierSet]:
    return {requirement.name: requirement.specifier for requirement in map(Requirement, pyproject["project"]["dependencies"])}


def test_the_client_depends_on_grpcio_and_protobuf_only_at_the_servers_floors() -> None:
    client, server = requirements_of(CLIENT), requirements_of(PYPROJECT)
    assert set(client) == {"grpcio", "protobuf"}, client
    assert all(client[name] == server[name] for name in client), f"the client's {client} and the server's floors differ"
    assert CLIENT["project"].get("optional-dependencies", {}) == {}


def test_the_server_depends_on_the_client_at_the_same_version() -> None:
    version = CLIENT["project"]["version"]
    assert version == PYPROJECT["project"]["version"]
    assert requirements_of(PYPROJECT)["text2image-client"] == SpecifierSet(f"=={version}")
    import text2image_client

    assert text2image_client.__version__ == version


def test_the_proto_has_one_home_and_one_distribution() -> None:
    """protos/text2image/v1/text2image.proto is the only live proto; the client packages it, the server does not."""
    folders = [ROOT / "protos", ROOT / "client", *(ROOT / package for package in shipped_top_level())]  # rglob does not follow the link
    found = sorted(str(path.relative_to(ROOT)) for folder in folders for path in folder.rglob("*.proto"))
    assert [path for path in found if not path.startswith("protos/released/")] == ["protos/text2image/v1/text2image.proto"]
    link = ROOT / "client" / "text2image"
    assert link.is_symlink() and link.resolve() == ROOT / "protos" / "text2image", "the client's text2image is the protos/ folder"
    server = PYPROJECT["tool"]["setuptools"]
    assert not any(package.startswith("text2image") for package in server["packages"]) and "package-dir" not in server
    assert not any(key.startswith("text2image") for key in server.get("package-data", {}))
    assert CLIENT["tool"]["setuptools"]["package-data"]["text2image.v1"] == ["*.proto", "*.pyi"]


def imported_top_level(path: Path) -> set[str]:
    """The top-level modules that ``path``'s import statements name (relative imports left out)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_the_client_imports_nothing_but_grpc_protobuf_and_the_standard_library() -> None:
    allowed = set(sys.stdlib_module_names) | {"grpc", "google", "text2image", "text2image_client", "__future__"}
    modules = sorted((ROOT / "client" / "text2image_client").glob("*.py"))
    assert len(modules) >= 4
    imported = {path.name: imported_top_level(path) - allowed for path in modules}
    assert all(not extra for extra in imported.values()), imported
    assert "core" in imported_top_level(ROOT / "t2i" / "client.py"), "the check reads what a module imports"


SUBCOMMAND_MODULES = (
    "gateway.server",
    "reindex.main",
    "reindex.job",
    "reindex.rollout",
    "relevance.shapes",
    "t2i.evaluate",
    "tqdm",
    "fsspec",
)  # not grpc_health: grpc imports it when present


def loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('loaded:' + ','.join(m for m in {SUBCOMMAND_MODULES!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(filter(None, result.stdout.rpartition("loaded:")[2].strip().split(",")))


def test_the_cli_imports_no_subcommands_module_until_it_runs() -> None:
    assert loaded_after("import t2i.cli") == set()
    assert loaded_after("from t2i.cli import main\ntry:\n    main(['search', '--help'])\nexcept SystemExit:\n    pass") == set()
    # The probe sees them when a subcommand's arguments are built.
    assert {"reindex.main", "tqdm", "fsspec"} <= loaded_after("from t2i.cli import build_parser\nbuild_parser({'reindex'})")


def run_cli_without(blocked: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
    """``t2i ARGV`` in a Python where the ``blocked`` modules cannot be imported (an extra not installed)."""
    code = f"import sys\nfor name in {blocked!r}:\n    sys.modules[name] = None\nfrom t2i.cli import main\nsys.exit(main({list(argv)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("blocked", "argv", "extra"),
    [
        (["grpc_health", "grpc_reflection"], ["serve"], "gateway"),
        (["tqdm", "fsspec"], ["reindex", "--help"], "reindex"),
        (["tqdm", "fsspec"], ["finalize", "run-1"], "reindex"),
        (["torch", "transformers"], ["export", "--model", "tiny"], "export"),
    ],
)
def test_a_subcommand_without_its_extra_names_it(blocked: list[str], argv: list[str], extra: str) -> None:
    result = run_cli_without(blocked, *argv)
    assert result.returncode == 2, result.stderr
    assert f"pip install 'text2image-search[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_search_and_help_need_no_extra() -> None:
    for argv in (["--help"], ["search", "--help"], ["info", "--help"], ["serve", "--help"]):
        result = run_cli_without(["grpc_health", "grpc_reflection", "tqdm", "fsspec", "torch", "transformers", "matplotlib"], *argv)
        assert result.returncode == 0, (argv, result.stderr)


def test_a_missing_module_of_our_own_keeps_its_traceback() -> None:
    from t2i.cli import missing_extra

    assert missing_extra("serve", ModuleNotFoundError("No module named 'gateway.x'", name="gateway.x")) is None
    assert "text2image-search[gateway]" in (missing_extra("serve", ModuleNotFoundError(name="grpc_health.v1")) or "")


def test_the_cli_names_real_extras_and_the_gateways_flags() -> None:
    from gateway import server as gateway_server
    from t2i.cli import EXTRAS, SUBCOMMANDS, build_parser

    assert set(EXTRAS) == set(SUBCOMMANDS)
    assert {extra for extras in EXTRAS.values() for extra in extras} <= set(PYPROJECT["project"]["optional-dependencies"])
    gateway = argparse.ArgumentParser()
    gateway_server.add_arguments(gateway)
    serve = vars(build_parser({"serve"}).parse_args(["serve"]))
    assert set(serve) - {"command", "log_level"} == set(vars(gateway.parse_args([])))
    assert len(serve) > 10


def test_the_build_requirements_are_pinned_as_constraints_pins_them() -> None:
    """The stubs the client's wheel holds are generated by its build's grpcio-tools: the release the project pins."""
    assert not any(requirement.startswith("grpcio-tools") for requirement in PYPROJECT["build-system"]["requires"]), "the server builds no stubs"
    build = CLIENT["build-system"]["requires"]
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line and not line.startswith("#"))
    pinned = [requirement for requirement in build if "==" in requirement]
    assert pinned, build
    for requirement in pinned:
        name, version = requirement.split("==", 1)
        assert pins.get(name) == version, f"pyproject's build requirement {requirement} but constraints.txt pins {name}=={pins.get(name)}"


def constraints_pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def generated_for(out: Path) -> dict[str, Version]:
    """The protobuf and grpcio releases that stubs generated now (by this environment's grpcio-tools) are for."""
    from importlib import import_module, resources

    protoc = import_module("grpc_tools.protoc")  # grpcio-tools publishes no types

    protos = ROOT / "protos"
    well_known = resources.files("grpc_tools") / "_proto"
    proto = protos / "text2image" / "v1" / "text2image.proto"
    assert protoc.main(["protoc", f"-I{protos}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", str(proto)]) == 0
    messages = (out / "text2image" / "v1" / "text2image_pb2.py").read_text()
    services = (out / "text2image" / "v1" / "text2image_pb2_grpc.py").read_text()
    protobuf = re.search(r"^# Protobuf Python Version: (\S+)$", messages, re.MULTILINE)
    grpcio = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'$", services, re.MULTILINE)
    assert protobuf and grpcio, "the generated code no longer names the versions it needs"
    return {"protobuf": Version(protobuf[1]), "grpcio": Version(grpcio[1])}


def floor(specifier: SpecifierSet) -> Version | None:
    """The lowest version a specifier admits by a ``>=`` (or ``==``) clause; None when it has no floor."""
    floors = [Version(clause.version) for clause in specifier if clause.operator in (">=", "==")]
    return max(floors, default=None)


def test_the_runtime_floors_admit_no_runtime_the_stubs_refuse(tmp_path: Path) -> None:
    """The stubs' import refuses an older protobuf (VersionError) or grpcio (RuntimeError) than they were generated for.

    So ``pip install .`` without constraints.txt must not resolve to one: pyproject's floor is at least the generated
    code's version, and constraints.txt's pin meets the floor.
    """
    build_pin = next(requirement for requirement in CLIENT["build-system"]["requires"] if requirement.startswith("grpcio-tools=="))
    assert f"grpcio-tools=={importlib.metadata.version('grpcio-tools')}" == build_pin, "this environment's grpcio-tools is not the build's"
    needed = generated_for(tmp_path)
    pins = constraints_pins()
    for dependencies in (requirements_of(CLIENT), requirements_of(PYPROJECT)):
        for name, version in needed.items():
            lowest = floor(dependencies[name])
            assert lowest is not None and lowest >= version, f"pyproject's {name}{dependencies[name]} admits a {name} older than the stubs' {version}"
            assert dependencies[name].contains(pins[name]), f"constraints.txt's {name}=={pins[name]} does not meet pyproject's {name}{dependencies[name]}"


def test_the_floor_check_sees_a_missing_or_low_floor() -> None:
    assert floor(SpecifierSet("")) is None
    assert floor(SpecifierSet("<7")) is None
    assert floor(SpecifierSet(">=6.31,<7")) == Version("6.31")
    assert floor(SpecifierSet("==6.33.6")) == Version("6.33.6")


def test_an_editable_install_fails_when_the_stubs_cannot_be_generated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """setuptools' editable install runs our ``build_py`` through ``_safely_run``, which swallows an ``Exception``.

    Without grpc_tools (``pip install -e . --no-build-isolation`` in an environment without it) the build must stop,
    not warn and install a ``text2image.v1`` without stubs.
    """
    import runpy

    import setuptools
    from setuptools.command.editable_wheel import editable_wheel  # setuptools 64 or later (a fresh venv of 3.11 has 65.5)
    from setuptools.dist import Distribution

    seen: dict[str, Any] = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: seen.update(kwargs))
    runpy.run_path(str(ROOT / "client" / "setup.py"))
    monkeypatch.setitem(sys.modules, "grpc_tools", None)  # import grpc_tools raises ImportError
    monkeypatch.chdir(tmp_path)
    editable = editable_wheel(Distribution({"name": "text2image-client", "packages": [], "cmdclass": seen["cmdclass"]}))
    with pytest.raises(SystemExit, match="grpcio-tools is a build requirement") as stopped:
        editable._safely_run("build_py")
    assert isinstance(stopped.value.__cause__, ImportError)
