"""The ``torch`` marker is where it must be, so that ``pytest -m "not torch"`` runs in the gateway-only environment.

The run itself, in an environment without torch and transformers, is ``tests/integration/test_base_install.py``'s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.markers import heavy_chain, leaves_out_torch, marked_torch, top_level_imports

UNIT = Path(__file__).resolve().parent
ROOT = UNIT.parents[1]


def test_every_unit_module_that_imports_a_heavy_library_at_its_top_is_marked() -> None:
    modules = sorted(UNIT.glob("test_*.py"))
    unmarked = {path.name: heavy_chain(path, ROOT) for path in modules if not marked_torch(path) and heavy_chain(path, ROOT)}
    assert unmarked == {}, "import chains that load a heavy library from an unmarked module"
    assert {"test_export.py", "test_tokenizer.py", "test_finetune.py"} <= {path.name for path in modules if marked_torch(path)}


def test_the_mark_is_read_from_the_source_of_the_module(tmp_path: Path) -> None:
    module = tmp_path / "test_x.py"
    module.write_text("import pytest\nimport torch\n\npytestmark = pytest.mark.torch  # why\n")
    assert marked_torch(module) and top_level_imports(module) == {"pytest", "torch"}
    module.write_text("import pytest\n\npytestmark = [pytest.mark.integration]\n\n\ndef test_a() -> None:\n    import torch\n")
    assert not marked_torch(module) and top_level_imports(module) == {"pytest"}


def test_only_an_expression_that_leaves_every_torch_test_out_skips_importing_the_marked_modules() -> None:
    assert leaves_out_torch("not torch") and leaves_out_torch("integration and not torch") and leaves_out_torch("not (torch or integration)")
    # A test marked torch and integration passes these, so its module must be imported.
    for markexpr in ("", "torch", "integration", "not integration", "torch and integration", "integration or not torch"):
        assert not leaves_out_torch(markexpr), markexpr


def test_a_test_that_uses_a_fixture_built_with_transformers_is_marked(request: pytest.FixtureRequest, model_repo: Path) -> None:
    assert request.node.get_closest_marker("torch") is not None
    assert request.node.get_closest_marker("integration") is None


def test_a_heavy_library_loaded_through_a_first_party_module_is_found(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "__init__.py").write_text("")
    (tmp_path / "bench" / "run.py").write_text("from export.main import run_export\n")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "__init__.py").write_text("")
    (tmp_path / "export" / "main.py").write_text("import json\nimport torch\n")
    module = tmp_path / "test_x.py"
    module.write_text("import pytest\n\nfrom bench.run import anything\n")
    assert heavy_chain(module, tmp_path) == ["test_x.py", "bench.run", "export.main", "torch"]
    # An optional import, one under TYPE_CHECKING and one inside a function load nothing at import time.
    (tmp_path / "export" / "main.py").write_text(
        "from typing import TYPE_CHECKING\ntry:\n    import torch\nexcept ImportError:\n    torch = None\n"
        "if TYPE_CHECKING:\n    import transformers\n\ndef f() -> None:\n    import onnx\n"
    )
    assert heavy_chain(module, tmp_path) == []
