"""The proto contract, checked with buf: lint clean, and no breaking change against any released copy.

buf comes from the npm registry at the version of ``tools/package-lock.json`` (``make install`` runs
``npm ci`` in ``tools/``); without it these tests fail, since ``make test`` must run them. The planted
cases show that the configuration in ``buf.yaml`` catches what it is there to catch: each copies the
live module and the released copies into a temporary workspace with the same ``buf.yaml`` and edits
only the copy.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "tools" / "node_modules" / ".bin" / "buf"
LIVE = Path("protos/text2image/v1/text2image.proto")
RELEASED = ROOT / "protos" / "released"


def buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run buf in ``cwd`` (a workspace with a ``buf.yaml``); no network is needed or used."""
    if not BUF.exists():
        pytest.fail(f"buf is not installed ({BUF}): run make install (it runs npm ci in tools/)")
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def releases() -> list[Path]:
    """The released copies, oldest first (``protos/released/vX.Y.Z``)."""
    found = [path for path in RELEASED.iterdir() if path.is_dir() and re.fullmatch(r"v\d+\.\d+\.\d+", path.name)]
    return sorted(found, key=lambda path: tuple(int(part) for part in path.name[1:].split(".")))


def workspace(tmp_path: Path) -> Path:
    """A copy of the repository's buf workspace (``buf.yaml``, the live protos and the released copies)."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    for proto in (ROOT / "protos").rglob("*.proto"):
        target = tmp_path / proto.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(proto, target)
    for config in RELEASED.rglob("buf.yaml"):
        shutil.copy(config, tmp_path / config.relative_to(ROOT))
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new))


def test_buf_lint_is_clean() -> None:
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_v0_1_0_is_released_and_every_release_is_its_own_module() -> None:
    names = [path.name for path in releases()]
    assert "v0.1.0" in names
    for release in releases():
        assert (release / "buf.yaml").is_file(), f"{release}: buf takes it as --against input only as a module of its own"
        assert (release / "text2image" / "v1" / "text2image.proto").is_file()


@pytest.mark.parametrize("release", releases(), ids=lambda path: path.name)
def test_buf_breaking_passes_against_the_release(release: Path) -> None:
    result = buf("breaking", "--against", str(release.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "reported"),
    [
        # The wire: a field renumbered (old clients read score as an unknown field).
        (
            "  float score = 3;\n  // Labels stored with the image.",
            "  float score = 13;\n  // Labels stored with the image.",
            'Previously present field "3" with name "score" on message "Hit" was deleted',
        ),
        # An RPC removed.
        (
            "  rpc ListLabels(ListLabelsRequest) returns (ListLabelsResponse);\n",
            "",
            'Previously present RPC "ListLabels" on service "IndexService" was deleted',
        ),
        # A field renamed: the wire is the same, the JSON and the generated code are not (FILE catches it, WIRE would not).
        (
            "  int32 top_k = 2;\n  // Optional structured filter.\n  Filter filter = 3;\n  // Drop hits whose cosine similarity is below this value (-1..1). Unset: keep all.\n  optional float min_score = 4;\n  // Relevance cut-off applied after min_score",
            "  int32 limit = 2;\n  // Optional structured filter.\n  Filter filter = 3;\n  // Drop hits whose cosine similarity is below this value (-1..1). Unset: keep all.\n  optional float min_score = 4;\n  // Relevance cut-off applied after min_score",
            'Field "2" with name "limit" on message "SearchTextRequest" changed option "json_name" from "topK" to "limit"',
        ),
    ],
    ids=["renumbered-field", "removed-rpc", "renamed-field"],
)
def test_a_planted_breaking_change_is_reported(tmp_path: Path, old: str, new: str, reported: str) -> None:
    copy = workspace(tmp_path)
    edit(copy / LIVE, old, new)
    result = buf("breaking", "--against", "protos/released/v0.1.0", cwd=copy)
    assert result.returncode != 0 and reported in result.stdout, result.stdout + result.stderr


def test_an_addition_is_not_breaking(tmp_path: Path) -> None:
    copy = workspace(tmp_path)
    edit(
        copy / LIVE,
        "  repeated string labels = 4;\n  // Typed metadata stored with the image",
        "  repeated string labels = 4;\n  // A new field.\n  string added = 99;\n  // Typed metadata stored with the image",
    )
    result = buf("breaking", "--against", "protos/released/v0.1.0", cwd=copy)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_planted_lint_error_is_reported(tmp_path: Path) -> None:
    copy = workspace(tmp_path)
    edit(
        copy / LIVE,
        "// Text and image search over the indexed collection.\n",
        "message bad_name {\n  string Value = 1;\n}\n\n// Text and image search over the indexed collection.\n",
    )
    result = buf("lint", cwd=copy)
    assert result.returncode != 0, result.stdout + result.stderr
    assert 'Message name "bad_name" should be PascalCase' in result.stdout and 'Field name "Value" should be lower_snake_case' in result.stdout, result.stdout
    assert 'Message "bad_name" should have a non-empty comment' in result.stdout


def test_the_released_copies_are_never_compiled_or_shipped() -> None:
    spec = importlib.util.spec_from_file_location("build_stubs", ROOT / "protos" / "build_stubs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert [path.relative_to(ROOT) for path in module.live_protos()] == [LIVE]
    # The distributions ship the package folder protos/text2image (the client's text2image links to it), not its parent.
    assert not RELEASED.resolve().is_relative_to((ROOT / "protos" / "text2image").resolve())
    for packaging in ("MANIFEST.in", "pyproject.toml", "client/MANIFEST.in", "client/pyproject.toml", "setup.py", "client/setup.py"):
        if (ROOT / packaging).is_file():
            assert "released" not in (ROOT / packaging).read_text(), packaging
