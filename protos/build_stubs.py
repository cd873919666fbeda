"""Generate the Python gRPC stubs of every ``.proto`` under ``protos/`` beside it, except the released copies (needs grpcio-tools).

The one way the stubs are made: the build backend of text2image-client runs it (``client/setup.py``'s
``build_py``, with grpcio-tools as a build requirement in ``client/pyproject.toml``), so every wheel and
editable install of the client holds them, the wheels the images build (``docker/*.Dockerfile``) included; ``make install`` (the
``$(PROTO_OUT)`` rule) also runs ``python protos/build_stubs.py``. ``tests/integration/test_base_install.py``
checks a wheel built from a clean copy of the repository.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
# Copies of released contracts (``buf breaking`` compares the live proto with them); never compiled.
RELEASED = ROOT / "released"


def live_protos() -> list[Path]:
    """Every ``.proto`` under ``protos/`` except the released copies under ``protos/released/``, sorted."""
    return sorted(path for path in ROOT.rglob("*.proto") if not path.is_relative_to(RELEASED))


def main() -> int:
    """Run protoc (``--python_out``, ``--grpc_python_out``, ``--pyi_out``) over every live proto file; its exit code."""
    protos = [str(path) for path in live_protos()]
    if not protos:
        print(f"no .proto files under {ROOT}", file=sys.stderr)
        return 1
    well_known = resources.files("grpc_tools") / "_proto"
    out = str(ROOT)
    return int(protoc.main(["protoc", f"-I{ROOT}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", f"--pyi_out={out}", *protos]))


if __name__ == "__main__":
    sys.exit(main())
