"""The build step that makes the protobuf stubs: ``build_py`` runs ``protos/build_stubs.py`` first.

Everything else about the distribution is in ``pyproject.toml``. grpcio-tools is a build requirement
there (pinned to constraints.txt's version, which generates code the runtime protobuf accepts), so a
wheel built from a clean clone holds ``text2image/v1/*_pb2.py`` and ``*_pb2_grpc.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def generate_stubs() -> None:
    """Run ``protos/build_stubs.py``; any failure is a ``SystemExit``, which setuptools lets through.

    An editable install runs a customised ``build_py`` through ``editable_wheel._safely_run``, which turns
    an ``Exception`` (say, no grpc_tools under ``--no-build-isolation``) into a warning and goes on to
    install a ``text2image.v1`` without stubs. ``SystemExit`` is a ``BaseException``: the build fails.
    """
    try:
        spec = importlib.util.spec_from_file_location("build_stubs", ROOT / "protos" / "build_stubs.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        code = module.main()
    except Exception as error:
        raise SystemExit(
            f"cannot generate the protobuf stubs (protos/build_stubs.py): {error!r}; grpcio-tools is a build requirement"
            " (pyproject.toml), so with --no-build-isolation install it first"
        ) from error
    if code != 0:
        raise SystemExit(f"protoc failed to generate the stubs (protos/build_stubs.py exit code {code})")


class BuildWithStubs(build_py):
    """``build_py`` that generates the stubs into ``protos/`` before it collects the modules."""

    def run(self) -> None:
        generate_stubs()
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
