"""The gateway's own first search, run before readiness first reports SERVING.

A fresh gateway's first query pays for what no later one does: the first Triton call on a new
channel, the tokenizer's first run, and pymilvus's first search of the collection (its channel and
the collection's description). ``WarmUp`` encodes one query through Triton and searches the active
collection with it once, within ``timeout_s``, and logs what each step took. It never raises and
never waits longer than ``timeout_s``: when it fails or runs out of time the gateway reports
SERVING anyway (the check that counts is ``SearchEngine.ready``), and says so in the log.

Before the first index there is no collection to search: the encode alone runs before SERVING,
and the search runs at a later readiness check, once a collection is active (SERVING already, so
readiness does not wait for an index that may never come).
"""

from __future__ import annotations

import asyncio
import logging
import time

from core.errors import FailedPrecondition
from core.filters import SearchFilter
from search.engine import SearchEngine

logger = logging.getLogger(__name__)

QUERY = "a photo"  # what the warm-up encodes and searches for (cached afterwards like any query)


class WarmUp:
    """Warms the gateway's Triton and Milvus paths once; ``searched`` when the active collection has been searched."""

    def __init__(self, engine: SearchEngine, timeout_s: float):
        self.engine = engine
        self.timeout_s = timeout_s
        self.encoded = False
        self.searched = False
        self.gave_up = False
        self.waiting = False  # searched for a collection and found none (logged once)

    @property
    def finished(self) -> bool:
        """Nothing left to warm (searched, or given up after a failure or the time limit)."""
        return self.searched or self.gave_up or self.timeout_s <= 0

    async def run(self) -> None:
        """Warm what is still cold, within ``timeout_s``; never raises (a failure is logged, and ends the warm-up)."""
        if self.finished:
            return
        try:
            await asyncio.wait_for(self._warm(), timeout=self.timeout_s)
        except TimeoutError:
            self.gave_up = True
            logger.warning("warm-up took over %.1f s: serving without it (the first queries may be slow)", self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - a warm-up must never keep a gateway from serving
            self.gave_up = True
            logger.warning("warm-up failed, serving without it: %s", exc)

    async def _warm(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        if not self.encoded:
            start = time.perf_counter()
            await self.engine.embed_texts([QUERY], deadline)
            self.encoded = True
            logger.info("warm-up: first text encode through Triton in %.0f ms", (time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        try:
            result = await self.engine.search_text(QUERY, 1, SearchFilter(), None, deadline)
        except FailedPrecondition as exc:
            if not self.waiting:
                logger.info("warm-up: no search yet (%s); it runs once a collection is active", exc)
            self.waiting = True
            return
        self.searched = True
        logger.info("warm-up: first search of %s in %.0f ms", result.collection, (time.perf_counter() - start) * 1000)
