"""The model versions one Triton serves, and which one encodes for a collection.

During a rollout Triton serves two versions of ``clip_text`` and ``clip_vision`` side by side
(``version_policy: all``). Every collection is stamped with the model that filled it, so a
gateway encodes each request with the version whose manifest carries that stamp: its Triton
version, tokenizer and preprocessing. An alias swap to a collection of the new model therefore
switches every replica within the alias-refresh interval, and no query is ever compared with
vectors of another model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.manifest import served_versions
from core.records import ModelStamp
from core.settings import Settings, TlsFiles
from inference.triton_client import RetryPolicy, TritonEncoder, triton_client

logger = logging.getLogger(__name__)

RESCAN_S = 2.0  # how often a lookup rescans the repository for added and removed versions


class ModelCatalog:
    """Encoders for every finished model version of one repository, sharing one Triton channel."""

    def __init__(
        self,
        url: str,
        repo: Path,
        policy: RetryPolicy = RetryPolicy(),
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
        tls: TlsFiles | None = None,
    ):
        """Scan ``repo`` for versions (see ``core.manifest.served_versions``) and open one channel.

        Raises:
            FileNotFoundError: the repository holds no exported model.
        """
        self.url = url
        self.repo = Path(repo)
        self.policy = policy
        self.clock = clock
        self._sleep = sleep
        self._client = client if client is not None else triton_client(url, tls)
        self._lock = threading.Lock()
        self._encoders: dict[int, TritonEncoder] = {}
        self._by_stamp: dict[ModelStamp, TritonEncoder] = {}  # the newest version wins when two carry the same weights
        self._scanned_at = float("-inf")
        self.rescan()
        if not self._encoders:
            raise FileNotFoundError(f"no exported model in {self.repo}: export one first ('t2i export --out {self.repo}')")

    def rescan(self) -> None:
        """Pick up versions added to the repository and forget removed ones."""
        with self._lock:
            self._scanned_at = self.clock()
            versions = served_versions(self.repo)
            for version in versions:
                if version not in self._encoders:
                    self._encoders[version] = TritonEncoder(self.url, self.repo, self.policy, self._client, self.clock, self._sleep, version=version)
                    logger.info("model version %d: %s", version, self._encoders[version].manifest.model_id)
            for version in set(self._encoders) - set(versions):
                logger.info("model version %d is gone from %s", version, self.repo)
                del self._encoders[version]
            self._by_stamp = {ModelStamp.of(self._encoders[v].manifest): self._encoders[v] for v in sorted(self._encoders)}

    @property
    def newest(self) -> TritonEncoder:
        """The encoder of the newest version (it fills new collections)."""
        return self._encoders[max(self._encoders)]

    @property
    def stamps(self) -> list[ModelStamp]:
        """The stamps of every known version, oldest first."""
        return list(self._by_stamp)

    def for_stamp(self, stamp: ModelStamp | None) -> TritonEncoder | None:
        """The encoder whose model filled a collection stamped ``stamp``; None when no served version has it.

        The newest version wins when two carry the same weights. The repository is rescanned at
        most every ``RESCAN_S``, so a version exported after start is found and a pruned one is
        no longer used.
        """
        if stamp is None:
            return None
        if self.clock() - self._scanned_at >= RESCAN_S:
            self.rescan()
        return self._by_stamp.get(stamp)

    def serves(self, stamp: ModelStamp) -> bool:
        """True when some version carries ``stamp``."""
        return self.for_stamp(stamp) is not None

    async def close(self) -> None:
        """Close the shared channel."""
        await self._client.close()


def catalog_from_settings(settings: Settings) -> ModelCatalog:
    """The catalog of ``settings``'s model repository on its Triton."""
    return ModelCatalog(settings.triton_url, settings.model_repository, RetryPolicy(timeout_s=settings.triton_timeout_s), tls=settings.triton_tls_files())
