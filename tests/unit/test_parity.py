"""export.parity.check_parity: the minimum cosine per tower, and a NaN output fails the check rather than passing it."""

from __future__ import annotations

import numpy as np
import pytest

from export.parity import ParityError, check_parity

pytestmark = pytest.mark.torch  # export.parity imports torch


def test_a_nan_embedding_fails_the_check() -> None:
    reference = {"clip_text": np.ones((2, 4), dtype=np.float32)}
    broken = {"clip_text": np.array([[1, 1, 1, 1], [np.nan, 1, 1, 1]], dtype=np.float32)}
    with pytest.raises(ParityError, match="clip_text"):
        check_parity(reference, broken, 0.99)


def test_equal_embeddings_pass_with_cosine_one() -> None:
    reference = {"clip_text": np.arange(8, dtype=np.float32).reshape(2, 4) + 1}
    assert check_parity(reference, {"clip_text": reference["clip_text"].copy()}, 0.9999)["clip_text"] == pytest.approx(1.0)
