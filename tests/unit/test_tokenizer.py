"""The gateway's tokenizer against the reference transformers CLIPTokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from transformers import CLIPTokenizer

from inference.tokenizer import ClipTokenizer

pytestmark = pytest.mark.torch  # transformers' CLIPTokenizer is the reference

TEXTS = [
    "a photo of a black dog",
    "Red CAR!!",
    "  leading and trailing spaces  ",
    "naïve café, résumé — ünïcödé",
    "emoji 🚗🐈 and symbols #$%&*()",
    "numbers 1234567 and 3.14159",
    "don't can't won't it's",
    "x",
    "UPPER lower MiXeD",
    "tab\tand\nnewline",
    "a very long caption that keeps going " * 12,
    "中文 日本語 한국어",
]


@pytest.fixture(scope="module")
def tokenizer(vocab_dir: Path) -> ClipTokenizer:
    return ClipTokenizer(vocab_dir / "fast" / "tokenizer.json")


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_reference(tokenizer: ClipTokenizer, reference_tokenizer: CLIPTokenizer, text: str) -> None:
    expected = reference_tokenizer(text, truncation=True, max_length=77)["input_ids"]
    batch = tokenizer.encode([text])
    assert batch.lengths[0] == len(expected)
    assert batch.input_ids[0, : len(expected)].tolist() == expected


def test_known_ids_of_openai_vocabulary(tokenizer: ClipTokenizer) -> None:
    # ids of openai/clip-vit-base-patch32 for this sentence
    assert tokenizer.encode(["a photo of a black dog"]).input_ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 1449, 1929, 49407]


def test_truncation_is_reported_and_ends_with_eot(tokenizer: ClipTokenizer) -> None:
    batch = tokenizer.encode(["word " * 200, "short"])
    assert batch.truncated == [True, False]
    assert batch.lengths[0] == 77
    assert batch.input_ids.shape == (2, 77)
    assert batch.input_ids[0, 76] == tokenizer.eot_id


def test_pads_to_smallest_bucket_with_mask(tokenizer: ClipTokenizer) -> None:
    batch = tokenizer.encode(["red car", "a photo of a black dog"])
    assert batch.lengths == [4, 8] and batch.input_ids.shape == (2, 8)
    assert batch.attention_mask.sum(axis=1).tolist() == batch.lengths
    assert np.all(batch.input_ids[0, batch.lengths[0] :] == tokenizer.pad_id)
    assert tokenizer.encode(["a photo of a black dog on grass"]).input_ids.shape[1] == 12
    assert tokenizer.encode(["word " * 20]).input_ids.shape[1] == 24
    assert tokenizer.encode(["word " * 40]).input_ids.shape[1] == 48
    assert tokenizer.encode(["word " * 70]).input_ids.shape[1] == 77


LONG_TEXTS = [
    "a photo of a black dog " * 1000,  # many words
    "x" * 20_000,  # one enormous word
    "dog" + " " * 30_000 + "cat " * 100,  # a long run of whitespace, then words
    "🚗" * 3_000,  # 4-byte characters: several tokens each
    "naïve café " * 900,
]


@pytest.mark.parametrize("text", LONG_TEXTS)
def test_long_texts_are_cut_before_tokenizing_with_clips_tokens(
    tokenizer: ClipTokenizer, reference_tokenizer: CLIPTokenizer, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    encode_batch = tokenizer._tokenizer.encode_batch

    def spy(texts: list[str]) -> object:
        seen.extend(len(t) for t in texts)
        return encode_batch(texts)

    monkeypatch.setattr(tokenizer._tokenizer, "encode_batch", spy)
    batch = tokenizer.encode([text])
    assert len(seen) == 1 and seen[0] <= tokenizer.max_chars  # never the whole text
    assert batch.truncated == [True] and batch.lengths[0] == 77
    expected = reference_tokenizer(text, truncation=True, max_length=77)["input_ids"]
    assert batch.input_ids[0].tolist() == expected  # the same 77 tokens as CLIP's tokenizer on the whole text


def test_a_megabyte_query_tokenizes_only_a_bounded_prefix(tokenizer: ClipTokenizer) -> None:
    text, cut = tokenizer.bound("red car " * 1_300_000)  # 10 MB
    assert cut and len(text) == tokenizer.max_chars
    assert tokenizer.bound("red car") == ("red car", False)
