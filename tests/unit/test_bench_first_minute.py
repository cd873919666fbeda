"""bench.first_minute without servers: the cold repository copy, the ratios, the table and the options."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import first_minute
from export.warmup import START
from tests.support.bench_reports import header

TEMPLATE = Path(__file__).resolve().parents[2] / "model_repository"


def window(p50: float, first: float, rate: float) -> dict[str, Any]:
    return {"search": {"p50_ms": p50, "first_ms": first}, "reindex": {"img_per_s": rate}, "began_s": 0.1, "reindex_began_s": 2.0, "ended_s": 40.5}


def test_cold_copy_strips_the_warmup_and_links_the_models(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(TEMPLATE, repo, ignore=shutil.ignore_patterns("[0-9]*", "manifest.json"))
    (repo / "clip_text" / "1").mkdir()
    (repo / "clip_text" / "1" / "model.onnx").write_bytes(b"onnx")
    cold = first_minute.cold_copy(repo, tmp_path / "cold")
    configs = [*cold.glob("*/config.pbtxt"), *cold.glob("*/configs/*.pbtxt")]
    assert len(configs) == 4 and all(START not in c.read_text() and "model_warmup" not in c.read_text() for c in configs)
    assert all(START in c.read_text() for c in [*repo.glob("*/config.pbtxt"), *repo.glob("*/configs/*.pbtxt")])  # the source keeps its own
    assert (cold / "clip_text" / "1" / "model.onnx").stat().st_ino == (repo / "clip_text" / "1" / "model.onnx").stat().st_ino


def test_ratios_are_first_minute_over_steady() -> None:
    r = first_minute.ratios(window(30.0, 200.0, 6.0), window(15.0, 20.0, 8.0))
    assert r == {"search_p50_first_over_steady": 2.0, "first_query_first_over_steady": 10.0, "reindex_img_per_s_first_over_steady": 0.75}


def test_render_names_each_variant_and_its_ratios() -> None:
    variant: dict[str, Any] = {"start_to_serving_s": 41.5, "first_minute": window(30.0, 200.0, 6.0), "steady": window(15.0, 20.0, 8.0)}
    variant["ratios"] = first_minute.ratios(variant["first_minute"], variant["steady"])
    report = {
        **header("bench/results/x-first-minute.json", images=200, queries=40, wait_s=300.0),
        "variants": {"warm": {**variant, "gateway_warmup_log": ["warm-up: first search of c in 475 ms"]}, "cold": variant},
    }
    table = first_minute.render(report)
    assert "| warm (shipped: model_warmup, gateway warm-up) | 41.5 s | 200 / 20 ms | 30.0 / 15.0 ms | 2.0 | 6.0 / 8.0 | 0.75 |" in table
    assert '- warm: the gateway logged before serving: "warm-up: first search of c in 475 ms".' in table
    assert "- cold: the first-minute window ran from 0.1 s to 40.5 s after SERVING (reindex from 2.0 s)." in table
    assert "cold (no model_warmup, T2I_WARMUP_S=0)" in table and "commit abc1234" in table and "300.0 s after SERVING" in table


def test_unknown_variant_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        first_minute.main(["--variants", "warm,lukewarm", "--no-publish"])
    assert "lukewarm" in capsys.readouterr().err
