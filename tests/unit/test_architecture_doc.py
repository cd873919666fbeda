"""docs/architecture.md names only what exists, and holds the layers of the import-linter contracts.

Every ``module.path`` or ``module.path.Name`` (or ``.Name.member``) of the project written in
backticks must resolve: the module file exists and ``ast`` finds the name defined in it (a class, a
function, an assignment), and a member in its class or in the class's project base classes. Nothing is imported, so torch and the servers
stay out. Bare CamelCase names in backticks must be classes or functions of the project or names of
the proto, and paths in backticks must exist. The document's layer table lists the packages of the
layers contract in its order, and every module of the forbidden contracts is named.
"""

from __future__ import annotations

import ast
import re
import tomllib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
IMPORTLINTER = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
# The proto's generated package lives under protos/ (its stubs are built, but its __init__.py is committed).
PACKAGE_ROOTS = {name: ROOT for name in IMPORTLINTER["root_packages"]} | {"text2image": ROOT / "protos"}

DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(r"[\w.\-]+(?:/[\w.\-]+)*/?")
CAMEL = re.compile(r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+")
PROTO_NAME = re.compile(r"^\s*(?:message|service|rpc|enum)\s+(\w+)", re.MULTILINE)
SETTING = re.compile(r"T2I_[A-Z0-9_]+")  # an environment variable, possibly with a value (``T2I_AUTH=open``)
METRIC = re.compile(r"t2i_[a-z0-9_]+")


def spans(text: str) -> list[str]:
    """The text of every inline code span, without a trailing ``()``."""
    return [span.strip().removesuffix("()") for span in re.findall(r"`([^`\n]+)`", text)]


def module_file(parts: list[str]) -> Path | None:
    """The file of the project module ``parts`` (a package's ``__init__.py``), or None."""
    base = PACKAGE_ROOTS[parts[0]].joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def defined(body: list[ast.stmt], name: str) -> ast.stmt | None:
    """The statement of ``body`` that defines ``name``: a class, a function or an assignment."""
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return node
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            elements = target.elts if isinstance(target, ast.Tuple) else [target]
            if any(isinstance(e, ast.Name) and e.id == name for e in elements):
                return node
    return None


def unresolved(dotted: str) -> str | None:
    """Why ``dotted`` (its first part a project package) does not resolve, or None when it does."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = module_file(parts[:cut])
        if path is not None:
            break
    else:
        return "no such module"
    names = parts[cut:]
    if not names:
        return None
    node = defined(parsed(path).body, names[0])
    if node is None:
        return f"{path.relative_to(ROOT)} defines no {names[0]!r}"
    for name in names[1:]:
        member = class_member(path, node, name) if isinstance(node, ast.ClassDef) else None
        if member is None:
            return f"{path.relative_to(ROOT)}: {getattr(node, 'name', '?')} has no member {name!r}"
        path, node = member
    return None


def imported_class(path: Path, name: str) -> tuple[Path, ast.ClassDef] | None:
    """The class ``name`` as the module ``path`` sees it: defined there, or imported from a project module."""
    body = parsed(path).body
    node = defined(body, name)
    if isinstance(node, ast.ClassDef):
        return path, node
    for statement in body:
        if isinstance(statement, ast.ImportFrom) and statement.module and statement.module.split(".")[0] in PACKAGE_ROOTS:
            for alias in statement.names:
                if (alias.asname or alias.name) == name and (source := module_file(statement.module.split("."))) is not None:
                    return imported_class(source, alias.name)
    return None


def class_member(path: Path, cls: ast.ClassDef, name: str) -> tuple[Path, ast.stmt] | None:
    """Where ``cls`` (of module ``path``) gets its member ``name``: its own body, else its project base classes, in order."""
    node = defined(cls.body, name)
    if node is not None:
        return path, node
    for base in cls.bases:
        found = imported_class(path, base.id) if isinstance(base, ast.Name) else None
        member = class_member(*found, name) if found is not None else None
        if member is not None:
            return member
    return None


@cache
def project_names() -> frozenset[str]:
    """Every class and function name of the project's packages, and every message, service and rpc of the proto."""
    names: set[str] = set()
    for package in IMPORTLINTER["root_packages"]:
        for path in (ROOT / package).rglob("*.py"):
            names.update(n.name for n in ast.walk(parsed(path)) if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef))
    for proto in (ROOT / "protos").rglob("*.proto"):
        names.update(PROTO_NAME.findall(proto.read_text()))
    return frozenset(names)


@cache
def settings_fields() -> frozenset[str]:
    """The environment variables of ``core.settings`` (``T2I_`` and a field of ``Settings`` or ``GatewaySettings``)."""
    tree = parsed(ROOT / "core" / "settings.py")
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in ("Settings", "GatewaySettings")]
    return frozenset(f"T2I_{n.target.id.upper()}" for c in classes for n in c.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name))


@cache
def string_literals() -> frozenset[str]:
    """Every string constant of the project's packages (metric names are among them)."""
    found: set[str] = set()
    for package in IMPORTLINTER["root_packages"]:
        for path in (ROOT / package).rglob("*.py"):
            found.update(n.value for n in ast.walk(parsed(path)) if isinstance(n, ast.Constant) and isinstance(n.value, str))
    return frozenset(found)


def wrong_names(text: str) -> list[str]:
    """What the code spans of ``text`` name that does not exist, each with the reason."""
    problems = []
    for span in spans(text):
        if DOTTED.fullmatch(span) and span.split(".")[0] in PACKAGE_ROOTS:
            if (why := unresolved(span)) is not None:
                problems.append(f"{span}: {why}")
        elif "/" in span and PATH.fullmatch(span) and not (ROOT / span.rstrip("/")).exists():
            problems.append(f"{span}: no such path")
        elif CAMEL.fullmatch(span) and span not in project_names():
            problems.append(f"{span}: no class, function or proto name of the project has it")
        elif (setting := SETTING.match(span)) and setting[0] not in settings_fields():
            problems.append(f"{span}: no such setting in core/settings.py")
        elif METRIC.fullmatch(span) and span not in string_literals():
            problems.append(f"{span}: no metric of the project has that name")
    return problems


def layer_rows(text: str) -> list[set[str]]:
    """The packages of each row of the document's layer table (the rows whose first cell is a number), in order."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 1 and re.fullmatch(r"\d+½?", cells[0]):
            rows.append({span.rstrip("/") for span in spans(cells[1])})
    return rows


def test_every_name_in_the_architecture_doc_exists() -> None:
    text = DOC.read_text()
    assert len(spans(text)) > 100  # the document names its modules in code spans
    assert not wrong_names(text), "docs/architecture.md names what does not exist:\n" + "\n".join(wrong_names(text))


def test_a_wrong_name_is_caught() -> None:
    """The checker itself: a made-up function of a real module, a made-up module, path, class, setting and metric fail; real ones pass."""
    wrong = (
        "`search.engine.SearchEngine.search_everything` `core.indexes` `gateway/nowhere.py` `SearchEverything` `core.index.ImageIndex.nope`"
        " `T2I_NO_SUCH_SETTING` `t2i_no_such_total` `gateway.admission.Overloaded.nothing_here`"
    )
    assert len(wrong_names(wrong)) == 8
    right = (
        "`search.engine.SearchEngine.search_text()` `core.index` `gateway/server.py` `SearchText` `core.records.ModelStamp.checksum` `grpc.aio`"
        " `T2I_AUTH=open` `T2I_MILVUS_THREADS` `t2i_requests_total` `gateway.admission.Overloaded.grpc_code_name`"
    )
    assert wrong_names(right) == []


def test_the_layer_table_follows_the_layers_contract() -> None:
    (contract,) = [c for c in IMPORTLINTER["contracts"] if c["type"] == "layers"]
    bottom_up = [{name.strip() for name in layer.split("|")} for layer in reversed(contract["layers"])]
    assert layer_rows(DOC.read_text()) == bottom_up


def test_every_module_of_the_forbidden_contracts_is_named() -> None:
    named = set(spans(DOC.read_text()))
    for contract in IMPORTLINTER["contracts"]:
        if contract["type"] == "forbidden":
            missing = [m for m in [*contract["source_modules"], *contract["forbidden_modules"]] if m not in named and f"{m}/" not in named]
            assert not missing, f"docs/architecture.md does not name {missing} of the contract {contract['name']!r}"
