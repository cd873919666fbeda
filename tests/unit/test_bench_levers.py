"""The lever variants really change the shipped CPU config (a silent no-op would make a lever look worthless)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.levers import VARIANTS, Variant
from bench.report import replace_between

pytestmark = pytest.mark.torch  # bench.levers imports the export (bench.run, export.main: transformers)

TEXT_CONFIG = (Path(__file__).resolve().parents[2] / "model_repository" / "clip_text" / "configs" / "cpu.pbtxt").read_text()


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.text_config is not None], ids=lambda v: v.name)
def test_each_config_variant_changes_the_shipped_config(variant: Variant) -> None:
    assert variant.text_config is not None
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
    with pytest.raises(ValueError, match=r"lacks the markers <!-- x --> \.\.\. <!-- b -->"):
        replace_between(doc, "<!-- x -->", "<!-- b -->", "new")


def test_ef_sweep_table_shows_each_ef_with_its_spread() -> None:
    from bench.ef_sweep import render

    run = {"c1_unique_p95_ms": 1.0, "c16_p99_ms": 1.0, "milvus_cpu_ms_per_query": 2.2}
    report = {
        "date": "d",
        "host": "h",
        "machine": "m",
        "commit": "c",
        "rounds": 2,
        "requests": 10,
        "path": "p.json",
        "sizes": {
            "1000000": {
                "recall_at_10": {"64": 0.999, "32": 0.989},
                "runs": {
                    "64": [
                        run | {"c1_unique_p50_ms": 17.3, "c1_cached_p50_ms": 5.6, "c16_qps": 88.5},
                        run | {"c1_unique_p50_ms": 18.0, "c1_cached_p50_ms": 5.7, "c16_qps": 86.6},
                    ],
                    "32": [
                        run | {"c1_unique_p50_ms": 16.2, "c1_cached_p50_ms": 4.4, "c16_qps": 95.2},
                        run | {"c1_unique_p50_ms": 16.2, "c1_cached_p50_ms": 4.5, "c16_qps": 92.9},
                    ],
                },
            }
        },
    }
    table = render(report)
    assert "| 1,000,000 | 64 | 0.999 | 17.3–18.0 ms | 5.6–5.7 ms | 87–88 | 2.2 ms |" in table
    assert "| 1,000,000 | 32 | 0.989 | 16.2 ms | 4.4–4.5 ms | 93–95 | 2.2 ms |" in table
