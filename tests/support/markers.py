"""The ``torch`` marker: which tests need torch, transformers or another tool the gateway-only environment lacks.

A test module that imports one of ``HEAVY`` at its top says so with ``pytestmark = pytest.mark.torch``;
a test that uses one of ``TORCH_FIXTURES`` is marked by ``tests/conftest.py``. Under ``-m "not torch"``
a marked module is not even imported (``marked_torch`` reads its source), so the rest runs where
those libraries are absent (``tests/integration/test_base_install.py`` runs it so).
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

from _pytest.mark.expression import Expression

# What only the export extra (and its scikit-image's scipy), the relevance extra (matplotlib) or the
# devstack extra (the milvus wheel) installs: none of it is in the gateway's runtime environment.
HEAVY = frozenset({"torch", "torchvision", "transformers", "optimum", "onnx", "onnxruntime", "open_clip", "skimage", "scipy", "matplotlib", "milvus"})

# Fixtures that write tokenizer files with transformers from open-clip-torch's BPE file.
TORCH_FIXTURES = frozenset({"vocab_dir", "reference_tokenizer", "model_repo"})


def marked_torch(module: Path) -> bool:
    """Whether a test module's own ``pytestmark`` is ``pytest.mark.torch``, read from its source without importing it."""
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets):
            return "pytest.mark.torch" in ast.unparse(node.value)
    return False


def leaves_out_torch(markexpr: str) -> bool:
    """Whether ``-m markexpr`` deselects every test marked ``torch``, whatever other markers it has.

    ``"not torch"`` and ``"integration and not torch"`` do; ``""``, ``"torch"``, ``"integration"`` and
    ``"not integration"`` do not (a test marked both ``torch`` and ``integration`` passes those).
    """
    if not markexpr:
        return False
    expression = Expression.compile(markexpr)
    others = sorted(set(re.findall(r"[\w:+\-.\[\]\\/]+", markexpr)) - {"and", "or", "not", "torch"})
    if len(others) > 8:
        return False  # too many names to try every combination: collect as usual
    for present in itertools.product((False, True), repeat=len(others)):
        marks = {"torch"} | {name for name, there in zip(others, present, strict=True) if there}

        def matcher(name: str, /, **kwargs: str | int | bool | None) -> bool:
            return name in marks  # noqa: B023 (evaluated before the loop moves on)

        if expression.evaluate(matcher):
            return False
    return True


def top_level_imports(module: Path) -> set[str]:
    """The top-level package of every import in a module's body (not those inside functions)."""
    names: set[str] = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names
