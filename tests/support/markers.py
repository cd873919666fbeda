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

# Fixtures that write tokenizer files with transformers from open-clip-torch's BPE file, and the
# shipped shapes model's (rebuilt with torch and transformers, tests/integration/conftest.py).
TORCH_FIXTURES = frozenset({"vocab_dir", "reference_tokenizer", "model_repo", "shapes_model"})


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


# The repository's own top-level packages, whose imports the transitive check follows.
FIRST_PARTY = frozenset({"core", "inference", "devstack", "search", "gateway", "reindex", "export", "relevance", "t2i", "web", "bench", "tests"})


def _import_time_imports(tree: ast.Module) -> list[str]:
    """The modules a module imports when it is imported: its body, ``if`` and ``try`` blocks and class bodies
    (not functions, not ``if TYPE_CHECKING``, not a ``try`` whose ``except ImportError`` makes the import optional)."""
    found: list[str] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.extend([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                optional = any(handler.type is not None and "ImportError" in ast.unparse(handler.type) for handler in node.handlers)
                if not optional:
                    visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.ClassDef | ast.With):
                visit(node.body)

    visit(tree.body)
    return found


def heavy_chain(module: Path, root: Path) -> list[str]:
    """The chain of imports by which importing ``module`` loads a library of ``HEAVY`` ([] if none does).

    First-party modules (``FIRST_PARTY``, resolved to files under ``root``) are followed, so a test that
    imports ``bench.run`` is found to load torch through ``export.main``.
    """

    def source_of(name: str) -> Path | None:
        parts = name.split(".")
        for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate
        return None

    seen: set[Path] = set()
    stack: list[tuple[Path, list[str]]] = [(module, [module.name])]
    while stack:
        path, chain = stack.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _import_time_imports(ast.parse(path.read_text())):
            top = name.split(".")[0]
            if top in HEAVY:
                return [*chain, name]
            if top in FIRST_PARTY:
                # A package's __init__ runs before its submodule: follow each prefix.
                for end in range(1, name.count(".") + 2):
                    prefix = ".".join(name.split(".")[:end])
                    if (found := source_of(prefix)) is not None:
                        stack.append((found, [*chain, prefix]))
    return []
