"""README statements that the code decides: the extras' packages, the query padding buckets, the filter limits."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from core.filters import MAX_FILTER_IDS, MAX_FILTER_LABELS, MAX_VALUE_BYTES
from core.records import MAX_ID_BYTES, MAX_LABEL_BYTES
from core.settings import GatewaySettings
from gateway.admission import readable_size
from gateway.server import request_caps
from inference.tokenizer import DEFAULT_BUCKETS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def table_after(header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header row is ``header``."""
    lines = README[README.index(header) :].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def package(requirement: str) -> str:
    return re.split(r"[\[=<>!~ ;]", requirement, maxsplit=1)[0].lower()


def test_the_packaging_table_lists_every_package_of_every_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {"(base)": project["dependencies"], **{f"`{name}`": deps for name, deps in project["optional-dependencies"].items()}}
    rows = {row[0]: row[2].lower() for row in table_after("| extra | for | adds |")}
    assert set(rows) == set(declared)
    for extra, requirements in declared.items():
        missing = [
            name
            for name in map(package, requirements)
            if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", rows[extra]) and not (name.startswith("types-") and "stubs" in rows[extra])
        ]
        assert not missing, f"the README's Packaging row for {extra} does not name {missing}"


def test_the_padding_buckets_in_the_readme_are_the_tokenizers() -> None:
    sentence = re.search(r"Queries are padded to length buckets of ([\d, and]+) tokens", README.replace("\n", " "))
    assert sentence is not None
    assert tuple(int(n) for n in re.findall(r"\d+", sentence.group(1))) == DEFAULT_BUCKETS


def test_the_filter_limits_in_the_readme_and_the_proto_are_the_codes() -> None:
    rows = {row[0]: row[1] for row in table_after("| input | status |")}
    counts = next(cell for cell in rows if "`ids`" in cell)
    assert f"more than {MAX_FILTER_IDS:,} `ids`" in counts and f"more than {MAX_FILTER_LABELS:,} labels" in counts
    values = next(cell for cell in rows if "filter id over" in cell)
    assert f"id over {MAX_ID_BYTES} bytes" in values and f"label over {MAX_LABEL_BYTES} bytes" in values and f"over {MAX_VALUE_BYTES} bytes" in values
    cap = readable_size(request_caps(GatewaySettings())["SearchText"]).replace(" KiB", "")
    assert any(f"({int(cap):,} KiB;" in cell for cell in rows), cap
    proto = (ROOT / "protos" / "text2image" / "v1" / "text2image.proto").read_text()
    assert f"At most {MAX_FILTER_IDS:,} ids" in proto and f"each at most {MAX_ID_BYTES} bytes" in proto
    assert f"at most {MAX_FILTER_LABELS:,} labels" in proto and f"each 1..{MAX_LABEL_BYTES} bytes" in proto and f"At most {MAX_VALUE_BYTES} bytes" in proto
