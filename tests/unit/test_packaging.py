"""The gateway and the reindex job load no model toolchain, so their image can leave it out."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "optimum", "onnx", "onnxruntime")


@pytest.mark.parametrize("module", ["gateway.server", "reindex.main", "search.engine", "web.server"])
def test_import_loads_no_model_toolchain(module: str) -> None:
    code = f"import sys, {module}; print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"importing {module} loaded {result.stdout.strip()}"


def test_the_check_sees_a_heavy_import() -> None:
    """The probe above would notice torch (so an empty answer means something)."""
    code = f"import sys, export.checkpoint; print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "torch" in result.stdout and "transformers" in result.stdout
