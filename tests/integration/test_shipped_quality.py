"""The shipped shapes model keeps its quality through the real stack (issue 20): a quality regression test.

The model that ships in ``relevance/models/shapes`` is rebuilt, exported (fp32 and int8), served by
a real Triton, indexed into a real Milvus by the reindex job, and queried through the real gateway
on an evaluation set drawn with a seed no recipe uses. Its P@10 must reach ``FLOORS``: the
recipe's own numbers less a margin for the set's sampling (``MARGIN``). A broken tokenizer,
preprocessing, export, int8 quantization or index path loses far more than the margin (a shuffled
tokenizer takes P@10 to chance, about 0.03).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from relevance import shapes, shipped
from t2i.shapes_demo import ensure_export, evaluate_model, p10

pytestmark = [pytest.mark.integration, pytest.mark.torch]

SEED = 11  # the recipe trains on seed 1 and reports seeds 2 (evaluation) and 3 (shifted)
MARGIN = 0.06
CLASSES = ("overall", "shape", "count", "binding")


def floors() -> dict[str, float]:
    """The recipe's evaluation P@10 per class, less ``MARGIN``."""
    recorded = shipped.read_recipe()["results"]["eval"]
    return {name: round(recorded[name] - MARGIN, 3) for name in CLASSES}


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
    found, wanted = p10(result), floors()
    assert result["index_recall"]["10"] >= 0.95, result["index_recall"]
    below = {name: (round(found[name], 3), wanted[name]) for name in CLASSES if found[name] < wanted[name]}
    assert not below, f"P@10 below the floor (found, floor): {below}"
