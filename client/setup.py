"""The build step that makes the protobuf stubs: ``build_py`` and ``sdist`` run ``protos/build_stubs.py`` first.

Everything else about the distribution is in ``pyproject.toml``. ``text2image`` here is a link to
``../protos/text2image``, the one home of ``text2image.proto`` (the buf module of ``protos/``), and the
stubs are generated beside it, so a wheel or an editable install holds ``text2image/v1/*_pb2*.py``. An
sdist carries the link's files as a folder, the stubs already generated, and builds without protoc.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
STUBS = HERE / "text2image" / "v1"
# In the repository: protos/build_stubs.py, beside the folder the link points to. In an sdist: absent.
GENERATOR = (HERE / "text2image").resolve().parent / "build_stubs.py"


def generate_stubs() -> None:
    """Run ``protos/build_stubs.py``; any failure is a ``SystemExit``, which setuptools lets through.

    An editable install runs a customised ``build_py`` through ``editable_wheel._safely_run``, which turns
    an ``Exception`` (say, no grpc_tools under ``--no-build-isolation``) into a warning and goes on to
    install a ``text2image.v1`` without stubs. ``SystemExit`` is a ``BaseException``: the build fails.
    """
    if not GENERATOR.is_file():
        if (STUBS / "text2image_pb2.py").is_file():
            return  # an sdist: the stubs came with it
        raise SystemExit(f"neither protos/build_stubs.py nor generated stubs in {STUBS}: build from the repository or its sdist")
    try:
        spec = importlib.util.spec_from_file_location("build_stubs", GENERATOR)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        code = module.main()
    except Exception as error:
        raise SystemExit(
            f"cannot generate the protobuf stubs (protos/build_stubs.py): {error!r}; grpcio-tools is a build requirement"
            " (client/pyproject.toml), so with --no-build-isolation install it first"
        ) from error
    if code != 0:
        raise SystemExit(f"protoc failed to generate the stubs (protos/build_stubs.py exit code {code})")


class BuildWithStubs(build_py):
    """``build_py`` that generates the stubs before it collects the modules."""

    def run(self) -> None:
        generate_stubs()
        super().run()


class SdistWithStubs(sdist):
    """``sdist`` that generates the stubs first, so that the archive holds them."""

    def run(self) -> None:
        generate_stubs()
        super().run()


setup(cmdclass={"build_py": BuildWithStubs, "sdist": SdistWithStubs})
