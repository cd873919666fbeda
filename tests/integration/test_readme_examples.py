"""The README's "Query features" examples, run against the real stack: what the docs offer, ran.

Every block marked ``<!-- example: NAME -->`` in README.md runs in a fresh Python process (``setup``
first, as a reader pastes it; a ``bash`` block runs in bash from the repository root) with the
session stack's address and read token in ``T2I_LISTEN`` and ``T2I_TOKEN``, the variables the
examples read. It must exit 0 and print lines of the form of the ``text`` block that follows it in
the README (numbers may differ, ids are any; every README line has a printed counterpart and every
printed line a README form), and what each example claims is checked on images planted for it.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from PIL import Image, ImageDraw

from devstack.stack import LocalStack
from t2i.client import GatewayClient
from tests.support.stack import PROJECT_ROOT
from text2image.v1 import text2image_pb2 as pb

README = PROJECT_ROOT / "README.md"
SECTION = "## Query features"
PREFIX = "readme/"


@dataclass(frozen=True)
class Example:
    name: str
    language: str
    code: str
    output: tuple[str, ...]


def examples(text: str) -> dict[str, Example]:
    """The marked blocks of the README's Query features section, by name, with the ``text`` block after each."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    found: dict[str, Example] = {}
    marks = list(re.finditer(r"<!-- example: ([\w-]+) -->\n```(\w+)\n(.*?)\n```\n", section, re.DOTALL))
    for number, mark in enumerate(marks):
        following = section[mark.end() : marks[number + 1].start() if number + 1 < len(marks) else len(section)]
        output = re.search(r"```text\n(.*?)\n```", following, re.DOTALL)
        name, language, code = mark.groups()
        assert name not in found, f"two README examples are named {name}"
        found[name] = Example(name, language, code, tuple(output.group(1).splitlines()) if output else ())
    return found


EXAMPLES = examples(README.read_text())
RUN = [name for name in EXAMPLES if name != "setup"]


def form(line: str) -> re.Pattern[str]:
    """A README output line as a pattern: ids (tokens with a ``/``) are any token, every integer any integer."""
    parts = []
    for token in line.split():
        if "/" in token:
            parts.append(r"\S+")
            continue
        pieces = re.split(r"([+-]?\d+)", token)
        parts.append("".join(r"[+-]?\d+" if re.fullmatch(r"[+-]?\d+", piece) else re.escape(piece) for piece in pieces))
    return re.compile(r"\s+".join(parts))


def png(draw: str, x: int, y: int, size: int) -> bytes:
    image = Image.new("RGB", (64, 64), "white")
    pen = ImageDraw.Draw(image)
    box = (x, y, x + size, y + size)
    if draw == "red-circle":
        pen.ellipse(box, fill=(220, 30, 30))
    else:
        pen.rectangle(box, fill=(30, 30, 220))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


RED = [f"{PREFIX}red-circle/{n:02d}.png" for n in range(16)]
BLUE = [f"{PREFIX}blue-square/{n:02d}.png" for n in range(14)]
COPY = f"{PREFIX}red-circle/copy-of-00.png"


@pytest.fixture(scope="module")
def planted(client: GatewayClient) -> Iterator[list[str]]:
    """Red circles and blue squares in the shared collection (64x64 PNG, modified 2026-06-01), one red circle twice."""
    modified = Timestamp()
    modified.FromDatetime(datetime(2026, 6, 1, tzinfo=UTC))
    items = []
    for ids, shape in ((RED, "red-circle"), (BLUE, "blue-square")):
        for n, image_id in enumerate(ids):
            content = png(shape, 4 + (n * 7) % 30, 4 + (n * 11) % 30, 16 + n % 4 * 6)
            items.append(pb.ImageItem(id=image_id, content=content, uri=f"/planted/{image_id}", labels=[shape], modified_time=modified))
    items.append(pb.ImageItem(id=COPY, content=items[0].content, uri=f"/planted/{COPY}", labels=["red-circle"], modified_time=modified))
    for start in range(0, len(items), 16):  # the stack's T2I_MAX_BATCH
        answer = client.index.UpsertImages(pb.UpsertImagesRequest(items=items[start : start + 16]), timeout=120)
        assert answer.failed == 0, [result.error for result in answer.results if not result.ok]
    ids = [item.id for item in items]
    yield ids
    for start in range(0, len(ids), 16):
        client.index.DeleteImages(pb.DeleteImagesRequest(ids=ids[start : start + 16]), timeout=60)


def run(example: Example, stack: LocalStack, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "T2I_LISTEN": stack.gateway_address, "T2I_TOKEN": stack.token("read")}
    if example.language == "python":
        source = f"{EXAMPLES['setup'].code}\n{example.code}\n"
        return subprocess.run([sys.executable, "-c", source], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert example.language == "bash", f"{example.name}: a README example is python or bash, not {example.language}"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["bash", "-euo", "pipefail", "-c", example.code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)


def check_negative(lines: list[str]) -> None:
    """The form only: the session stack's tiny random model holds no red squares and cannot show a concept
    pushed down. The README's claim (a negative term lowers its concept) is checked on the shipped
    shapes model by tests/integration/test_negative_terms.py."""
    plain, minus = lines
    assert plain.startswith("a red circle: ") and minus.startswith("a red circle, minus a square: "), lines
    assert all(0 <= int(line.split(": ")[1].split()[0]) <= 20 for line in lines), lines


def check_image_and_text(lines: list[str]) -> None:
    (line,) = lines
    seed, listed = line.split(" -> ")
    assert seed not in listed and listed.count(",") == 2, line


def check_vector(lines: list[str]) -> None:
    (line,) = lines
    assert line.split()[1] == "True", line


def check_pages(lines: list[str]) -> None:
    assert lines[0] == "10 10 True", lines
    total, distinct = lines[1].split()
    assert total == distinct and int(total) >= 20, lines


def check_duplicates(lines: list[str]) -> None:
    """At least the planted copy passes 0.999; the closest pairs come first, each once with a < b."""
    count, *closest = lines
    assert int(count.split()[0]) >= 1 and 1 <= len(closest) <= 3, lines
    scores = [float(line.split()[0]) for line in closest]
    assert scores == sorted(scores, reverse=True) and scores[0] >= 0.999, lines
    assert all(line.split()[1] < line.split()[2] for line in closest), lines


def check_duplicates_cli(lines: list[str]) -> None:
    count, *pairs = lines
    assert count == f"{len(pairs)} pairs of near-duplicates" and pairs, lines[:5]
    scores = [float(line.split()[0]) for line in pairs]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.9995, lines[:5]
    assert all(line.split()[1] < line.split()[2] for line in pairs) and any(line.split()[1:] == [RED[0], COPY] for line in pairs), lines[:5]


def check_batch(lines: list[str]) -> None:
    assert [line.split(":")[0] for line in lines] == ["hits", "hits", "failed"] and lines[2] == "failed: NOT_FOUND", lines


def check_metadata(lines: list[str]) -> None:
    assert len(lines) == 3, lines
    for line in lines:
        image_id, rest = line.split(maxsplit=1)
        assert image_id in (*RED, COPY) and rest.startswith("64x64 PNG ") and rest.endswith("modified 2026-06-01"), line


CHECKS = {
    "negative": check_negative,
    "image-and-text": check_image_and_text,
    "vector": check_vector,
    "pages": check_pages,
    "duplicates": check_duplicates,
    "duplicates-cli": check_duplicates_cli,
    "batch": check_batch,
    "metadata": check_metadata,
}


def test_the_readme_marks_an_example_of_each_feature() -> None:
    assert "setup" in EXAMPLES
    assert set(RUN) <= set(CHECKS), f"a README example without its check here: {set(RUN) - set(CHECKS)}"
    assert set(CHECKS) <= set(RUN), f"a feature without its README example: {set(CHECKS) - set(RUN)}"
    for name in RUN:
        assert EXAMPLES[name].output, f"the README shows no output (a text block) after the example {name}"


def test_a_line_matches_its_form_only() -> None:
    pattern = form("1. +0.412  red-circle/shapes-00107.png")
    assert pattern.fullmatch("3. -0.020  readme/blue-square/03.png") and not pattern.fullmatch("3. -0.020")
    assert form("10 10 True").fullmatch("10 10 True") and not form("10 10 True").fullmatch("10 10 False")


@pytest.mark.parametrize("name", RUN)
def test_readme_example_runs_and_prints_what_the_readme_shows(name: str, stack: LocalStack, planted: list[str], tmp_path: Path) -> None:
    example = EXAMPLES[name]
    result = run(example, stack, tmp_path)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    assert lines, f"{name} printed nothing"
    forms = [form(line) for line in example.output]
    unmatched = [line for line in lines if not any(pattern.fullmatch(line) for pattern in forms)]
    assert not unmatched, f"{name} printed lines of no form the README shows: {unmatched[:5]} (README: {example.output})"
    missing = [shown for shown, pattern in zip(example.output, forms, strict=True) if not any(pattern.fullmatch(line) for line in lines)]
    assert not missing, f"{name} printed nothing like the README's {missing}"
    CHECKS[name](lines)
