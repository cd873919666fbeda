"""The congruence suite (``tests/support/congruence.py``) against the real Milvus of the session's stack.

``tests/unit/test_index_congruence.py`` runs the same cases against the unit tests' fake client, so
both observe exactly what each case expects: the fake and the server agree case by case.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.stack import LocalStack
from tests.support.congruence import CASES, Backend, Case, real_backend, same


@pytest.fixture()
def backend(stack: LocalStack) -> Iterator[Backend]:
    yield from real_backend(stack)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_real_milvus_observes_what_each_case_expects(case: Case, backend: Backend) -> None:
    observed = case.run(backend)
    assert same(observed, case.expected), f"the real Milvus observed {observed!r}, the case expects {case.expected!r}"
