"""The congruence suite (``tests/support/congruence.py``) against the unit tests' fake Milvus client: no servers.

``tests/integration/test_index_congruence.py`` runs the same cases against the real Milvus of the session.
"""

from __future__ import annotations

import pytest

from tests.support.congruence import CASES, Case, fake_backend, same
from tests.unit.fake_milvus import FakeRefused, parse_expression


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_fake_milvus_observes_what_each_case_expects(case: Case) -> None:
    observed = case.run(fake_backend())
    assert same(observed, case.expected), f"the fake observed {observed!r}, the case expects {case.expected!r}"


@pytest.mark.parametrize(
    "expression",
    ['uri == "x"', "id in [1, 2]", 'labels like "x%"', 'uri like "%x"', "array_length(labels) > 1", 'id in ["a"] or id in ["b"]', "nonsense"],
)
def test_the_fake_refuses_an_expression_it_does_not_model(expression: str) -> None:
    """Forms this project never builds are refused, never ignored (an ignored filter once returned every row)."""
    with pytest.raises(FakeRefused):
        parse_expression(expression)
