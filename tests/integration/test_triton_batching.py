"""Concurrent queries of different lengths share Triton executions without changing any result.

The CPU model pads a dynamic batch to its longest query (``pad_to_longest``); a wrong pad value or
axis would change the embeddings of the shorter queries, which this compares to single requests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from tritonclient.grpc import aio as triton_aio

from core.manifest import TEXT_MODEL
from devstack.stack import LocalStack
from inference.triton_client import TritonEncoder

QUERIES = ["cat", "a photo of a red car", "a photo of a black dog sleeping on the grass near a lake", "words " * 30, "coffee", "two horses"]


async def text_counts(url: str, at_least: int = 0) -> tuple[int, int]:
    """(inferences, executions) of the text model; waits briefly for ``at_least`` inferences (stats lag responses)."""
    client = triton_aio.InferenceServerClient(url)
    try:
        for _ in range(50):
            stats = (await client.get_inference_statistics(TEXT_MODEL, as_json=True))["model_stats"][0]
            counts = int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))
            if counts[0] >= at_least:
                break
            await asyncio.sleep(0.1)
    finally:
        await client.close()
    return counts


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
    assert executions < inferences  # concurrent queries of different lengths shared executions
