"""The lever variants really change the shipped CPU config (a silent no-op would make a lever look worthless)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.levers import VARIANTS
from bench.report import replace_between

TEXT_CONFIG = (Path(__file__).resolve().parents[2] / "model_repository" / "clip_text" / "configs" / "cpu.pbtxt").read_text()


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.text_config is not None], ids=lambda v: v.name)
def test_each_config_variant_changes_the_shipped_config(variant) -> None:  # type: ignore[no-untyped-def]
    edited = variant.text_config(TEXT_CONFIG)
    assert edited != TEXT_CONFIG
    assert edited.count("{") == edited.count("}")  # still balanced protobuf text


def test_variants_without_config_change_precision_or_settings() -> None:
    plain = [v for v in VARIANTS if v.text_config is None and v.precision == "int8" and not v.env]
    assert [v.name for v in plain] == [VARIANTS[0].name, VARIANTS[-1].name]  # only the reference, first and last


def test_replace_between_keeps_the_rest(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("head\n<!-- a -->\nold\n<!-- b -->\ntail\n")
    replace_between(doc, "<!-- a -->", "<!-- b -->", "new")
    assert doc.read_text() == "head\n<!-- a -->\nnew\n<!-- b -->\ntail\n"
    with pytest.raises(ValueError):
        replace_between(doc, "<!-- x -->", "<!-- b -->", "new")
