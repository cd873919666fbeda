"""Concurrent queries share Triton executions without changing any result.

Triton batches requests of equal shapes only (the CPU config's inputs allow no ragged batching), so
queries of one token bucket share executions; the CPU model would pad a batch of mixed lengths to
its longest (``pad_to_longest``). Batched embeddings are compared to single requests. A bad request
in a dynamic batch fails alone: the others of its batch get their results.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import aio as triton_aio

from core.errors import InvalidArgument
from core.manifest import TEXT_MODEL
from devstack.stack import LocalStack
from devstack.triton import start_triton
from inference.tokenizer import TokenBatch
from inference.triton_client import RetryPolicy, TritonEncoder

QUERIES = ["cat", "a photo of a red car", "a photo of a black dog sleeping on the grass near a lake", "words " * 30, "coffee", "two horses"]


async def text_stats(url: str, ready: Callable[[dict[str, Any]], bool] = lambda stats: True) -> dict[str, Any]:
    """The text model's statistics (Triton's JSON); waits briefly until ``ready`` holds for them (stats lag responses)."""
    client = triton_aio.InferenceServerClient(url)
    try:
        for _ in range(50):
            stats: dict[str, Any] = (await client.get_inference_statistics(TEXT_MODEL, as_json=True))["model_stats"][0]
            if ready(stats):
                break
            await asyncio.sleep(0.1)
    finally:
        await client.close()
    return stats


async def text_counts(url: str, at_least: int = 0) -> tuple[int, int]:
    """(inferences, executions) of the text model; waits briefly for ``at_least`` inferences."""
    stats = await text_stats(url, lambda stats: int(stats.get("inference_count", 0)) >= at_least)
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_mixed_lengths_are_merged_and_match_single_requests(stack: LocalStack, tiny_repo: Path) -> None:
    async def scenario() -> tuple[np.ndarray, list[np.ndarray], int, int]:
        encoder = TritonEncoder(stack.triton_url, tiny_repo)
        try:
            alone = np.concatenate([(await encoder.encode_texts([q]))[0] for q in QUERIES])
            assert len({encoder.tokenizer.encode([q]).input_ids.shape[1] for q in QUERIES}) >= 3  # really mixed lengths
            inferences, executions = await text_counts(stack.triton_url, at_least=len(QUERIES))
            rounds = []
            for _ in range(10):
                results = await asyncio.gather(*(encoder.encode_texts([q]) for q in QUERIES))
                rounds.append(np.concatenate([vectors for vectors, _ in results]))
            after_inferences, after_executions = await text_counts(stack.triton_url, at_least=inferences + 10 * len(QUERIES))
            return alone, rounds, after_inferences - inferences, after_executions - executions
        finally:
            await encoder.close()

    alone, rounds, inferences, executions = asyncio.run(scenario())
    for together in rounds:
        np.testing.assert_allclose(together, alone, atol=1e-5)
    assert inferences == 10 * len(QUERIES)
    assert executions < inferences  # concurrent queries (of one token bucket) shared executions


def count(stats: dict[str, Any], *path: str) -> int:
    """A counter of Triton's statistics JSON (absent until it is first counted)."""
    value: Any = stats
    for key in path:
        value = value.get(key, {})
    return int(value or 0)


def batching_repo(tiny_repo: Path, folder: Path, rows: int, delay_s: float) -> Path:
    """A copy of ``tiny_repo`` whose text model runs ``rows`` rows as one execution, waiting up to ``delay_s`` for them."""
    repo = folder / "repo"
    shutil.copytree(tiny_repo, repo)
    config = repo / TEXT_MODEL / "configs" / "cpu.pbtxt"
    text = config.read_text()
    batching = f"dynamic_batching {{ preferred_batch_size: [ {rows} ] max_queue_delay_microseconds: {int(delay_s * 1e6)} }}"
    changed, found = re.subn(r"dynamic_batching \{[^}]*\}", batching, text)
    assert found == 1
    config.write_text(changed)
    return repo


def test_a_bad_request_fails_alone_in_its_dynamic_batch(tiny_repo: Path, tmp_path: Path) -> None:
    """Good and bad requests in one execution: each good one gets what it gets alone, each bad one its own error.

    Triton batches only requests of equal shapes (the inputs allow no ragged batching), so the
    batched requests share one token bucket; the one whose mask is longer than its ids is sent apart.
    """
    good = ["cat", "coffee", "two horses", "a photo of a red car"]
    rows = len(good) + 2  # and two bad ones of the same shape
    repo = batching_repo(tiny_repo, tmp_path, rows, delay_s=3)  # a smaller batch waits the delay; a full one leaves at once
    triton, ports = start_triton(repo, tmp_path / "triton")
    url = f"127.0.0.1:{ports.grpc}"

    def spoiled(tokens: TokenBatch, column: int, token_id: int) -> TokenBatch:
        ids = tokens.input_ids.copy()
        ids[0, column] = token_id
        return dataclasses.replace(tokens, input_ids=ids)

    async def scenario() -> tuple[np.ndarray, list[Any], dict[str, Any], dict[str, Any], np.ndarray]:
        encoder = TritonEncoder(url, repo, RetryPolicy(timeout_s=30, attempts=1))
        try:
            tokens = [encoder.tokenizer.encode([q]) for q in good]
            assert len({t.input_ids.shape for t in tokens}) == 1
            alone = np.concatenate([await encoder.encode_tokens(t) for t in tokens])  # one at a time
            before = await text_stats(url, lambda stats: count(stats, "execution_count") >= len(good))
            beyond = spoiled(tokens[1], 2, 1_000_000)  # onnxruntime's Gather raises: the run of the whole batch fails
            negative = spoiled(tokens[2], 1, -5)  # Gather would take it from the end of the vocabulary
            longer_mask = dataclasses.replace(tokens[0], attention_mask=np.ones((1, tokens[0].input_ids.shape[1] + 3), np.int64))
            requests = [tokens[0], tokens[1], beyond, tokens[2], negative, tokens[3]]
            results = await asyncio.gather(*(encoder.encode_tokens(t) for t in requests), return_exceptions=True)
            after = await text_stats(url, lambda stats: count(stats, "execution_count") > count(before, "execution_count"))
            # Sent apart: a request of another shape would end the pending batch early.
            apart = await asyncio.gather(encoder.encode_tokens(longer_mask), return_exceptions=True)
            again = await encoder.encode_tokens(tokens[1])  # Triton serves on
            return alone, [*results, *apart], before, after, again
        finally:
            await encoder.close()

    try:
        alone, results, before, after, again = asyncio.run(scenario())
    finally:
        triton.stop()
    assert [isinstance(r, np.ndarray) for r in results] == [True, True, False, True, False, True, False], results
    answers = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert [type(e) for e in errors] == [InvalidArgument] * 3, errors  # the gateway answers INVALID_ARGUMENT
    assert "Triton rejected the input for clip_text" in str(errors[0]) and "input_ids int64[1, 8]" in str(errors[0])
    assert "idx=1000000" in str(errors[0]) and "out of data bounds" in str(errors[0])  # onnxruntime's reason
    assert "input_ids holds negative values (the smallest is -5)" in str(errors[1])
    assert "input_ids and attention_mask must have the same length in a request (input_ids [1, 8], attention_mask [1, 11])" in str(errors[2])
    np.testing.assert_allclose(np.concatenate(answers), alone, atol=1e-5)
    np.testing.assert_allclose(again, alone[[1]], atol=1e-5)
    # The six requests ran as one execution of batch size 6.
    assert count(after, "execution_count") - count(before, "execution_count") == 1
    sizes = {int(b["batch_size"]): count(b, "compute_infer", "count") for b in before.get("batch_stats", [])}
    ran = {int(b["batch_size"]): count(b, "compute_infer", "count") - sizes.get(int(b["batch_size"]), 0) for b in after.get("batch_stats", [])}
    assert {size: n for size, n in ran.items() if n} == {rows: 1}, after.get("batch_stats")
