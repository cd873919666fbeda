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


class BuildWithStubs(build_py):
    """``build_py`` that generates the stubs into ``protos/`` before it collects the modules."""

    def run(self) -> None:
        spec = importlib.util.spec_from_file_location("build_stubs", ROOT / "protos" / "build_stubs.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if module.main() != 0:
            raise SystemExit("protoc failed to generate the stubs (protos/build_stubs.py)")
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
