"""The shipped shapes model keeps its quality through the real stack (issue 20): a quality regression test.

The model that ships in ``relevance/models/shapes`` is rebuilt, exported (fp32 and int8), served by
a real Triton, indexed into a real Milvus by the reindex job, and queried through the real gateway
on an evaluation set drawn with a seed no recipe uses. Its P@10 must reach ``FLOORS``, stated here:
about 0.08 to 0.13 under what the shipped model scored on its own evaluation set (P@10 0.53 overall;
shape 0.63, count 0.59, binding 0.46, held-out pairs 0.33; docs/relevance.md), so that another
sample of images passes, and well above what a model that cannot count or bind scores (the base:
count 0.12, binding 0.29). A broken tokenizer, preprocessing, export, int8 quantization or index
path falls far below: a shuffled tokenizer took P@10 to 0.001 (shown once while writing this test).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from relevance import shapes, shipped
from t2i.shapes_demo import ensure_export, evaluate_model, p10

pytestmark = [pytest.mark.integration, pytest.mark.torch]

SEED = 11  # the recipe trains on seed 1 and reports seeds 2 (evaluation) and 3 (shifted)
FLOORS = {"overall": 0.45, "shape": 0.5, "count": 0.45, "binding": 0.35, "held out": 0.2}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The shipped model folder and a fresh evaluation set."""
    work = tmp_path_factory.mktemp("shipped-quality")
    model = shipped.materialize(work / "model")
    shapes.generate(work / "eval", 1200, SEED)
    return model, work


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_shipped_model_reaches_its_floor_through_the_gateway(served: tuple[Path, Path], precision: str) -> None:
    model, work = served
    ensure_export(str(model), work / f"repo-{precision}", precision)
    result = evaluate_model(work / f"repo-{precision}", work / f"stack-{precision}", work / "eval")
    found = p10(result)
    assert result["index_recall"]["10"] >= 0.95, result["index_recall"]
    below = {name: (round(found[name], 3), floor) for name, floor in FLOORS.items() if found[name] < floor}
    assert not below, f"P@10 below the floor (found, floor): {below}"
