"""The model versions one Triton serves, and which one encodes for a collection.

During a rollout Triton serves two versions of ``clip_text`` and ``clip_vision`` side by side
(``version_policy: all``). Every collection is stamped with the model that filled it, so a
gateway encodes each request with the version whose manifest carries that stamp: its Triton
version, tokenizer and preprocessing. An alias swap to a collection of the new model therefore
switches every replica within the alias-refresh interval, and no query is ever compared with
vectors of another model.

The catalog scans the repository once when it is built, then in a background task of its own
(``start``): every ``RESCAN_S`` it reads the repository and builds the encoders of new versions in
a worker thread (and rebuilds those of versions whose manifest changed, such as a threshold written
by ``t2i eval --calibrate``), and swaps in the new set whole. A lookup only reads the set already built, so a
slow filesystem never holds up a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.manifest import Manifest, served_versions
from core.records import ModelStamp
from core.settings import Settings, TlsFiles
from inference.triton_client import RetryPolicy, TritonEncoder, triton_client

logger = logging.getLogger(__name__)

RESCAN_S = 2.0  # how often the catalog's background task rescans the repository for added and removed versions


@dataclass(frozen=True)
class _Versions:
    """One scan's encoders, never changed once built: a reader on any thread sees a whole scan."""

    encoders: Mapping[int, TritonEncoder]
    by_stamp: Mapping[ModelStamp, TritonEncoder] = field(init=False)  # the newest version wins when two carry the same weights

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_stamp", {ModelStamp.of(self.encoders[v].manifest): self.encoders[v] for v in sorted(self.encoders)})


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
        rescan_s: float = RESCAN_S,
    ):
        """Scan ``repo`` for versions (see ``core.manifest.served_versions``) and open one channel.

        A version whose files cannot be read is logged and left out (the scans retry it).

        Raises:
            FileNotFoundError: the repository holds no version that can be served.
        """
        self.url = url
        self.repo = Path(repo)
        self.policy = policy
        self.clock = clock
        self.rescan_s = rescan_s
        self._sleep = sleep
        self._client = client if client is not None else triton_client(url, tls)
        self._broken: dict[int, str] = {}  # version -> why it cannot be served, so that each problem is logged once
        self._stale: dict[int, str] = {}  # served version -> why its changed manifest cannot be rebuilt yet (logged once)
        self._scan_error: str | None = None
        self._scanning = asyncio.Lock()  # one scan at a time: the background task's and any ``rescan`` call
        self._task: asyncio.Task[None] | None = None
        self._versions = _Versions({})
        self._publish(self._scan({}))
        if not self._versions.encoders:
            raise FileNotFoundError(f"no exported model in {self.repo}: export one first ('t2i export --out {self.repo}')")

    def _scan(self, known: Mapping[int, TritonEncoder]) -> dict[int, TritonEncoder]:
        """The encoders of the repository's finished versions, reusing ``known`` ones (blocking: reads files)."""
        versions = served_versions(self.repo)
        encoders = {}
        for version in versions:
            encoder = self._refreshed(known[version], version) if version in known else self._build(version)
            if encoder is not None:
                encoders[version] = encoder
        self._broken = {v: problem for v, problem in self._broken.items() if v in versions}
        self._stale = {v: problem for v, problem in self._stale.items() if v in encoders}
        return encoders

    def _refreshed(self, encoder: TritonEncoder, version: int) -> TritonEncoder:
        """``encoder``, or a new one when the version's manifest changed (a calibration written, say).

        A manifest that cannot be read, or a changed version that cannot be rebuilt (a file
        mid-write, say), keeps ``encoder`` serving (logged once, not counted as broken); a later scan
        retries it.
        """
        try:
            if Manifest.read_version(self.repo, version) == encoder.manifest:
                return encoder
        except (OSError, ValueError, TypeError):
            return encoder
        try:
            fresh = self._encoder(version)
        except Exception as exc:  # noqa: BLE001 - as in _build: the previous encoder keeps serving
            problem = f"{type(exc).__name__}: {exc}"
            if self._stale.get(version) != problem:
                logger.warning("kept the previous encoder of version %d of %s: %s", version, self.repo, problem)
            self._stale[version] = problem
            return encoder
        self._stale.pop(version, None)
        logger.info("model version %d: %s (manifest changed)", version, fresh.manifest.model_id)
        return fresh

    def _encoder(self, version: int) -> TritonEncoder:
        return TritonEncoder(self.url, self.repo, self.policy, self._client, self.clock, self._sleep, version=version)

    def _build(self, version: int) -> TritonEncoder | None:
        """The encoder of ``version``, or None (logged) when its manifest, tokenizer or preprocessing cannot be read."""
        try:
            encoder = self._encoder(version)
        except Exception as exc:  # noqa: BLE001 - any unreadable file of one version (tokenizers raises a bare Exception): the others keep serving
            problem = f"{type(exc).__name__}: {exc}"
            if self._broken.get(version) != problem:
                logger.warning("model version %d of %s is not served: %s", version, self.repo, problem)
            self._broken[version] = problem
            return None
        self._broken.pop(version, None)
        logger.info("model version %d: %s", version, encoder.manifest.model_id)
        return encoder

    def _publish(self, encoders: dict[int, TritonEncoder]) -> None:
        for version in sorted(set(self._versions.encoders) - set(encoders)):
            logger.info("model version %d is gone from %s", version, self.repo)
        self._versions = _Versions(encoders)

    async def rescan(self) -> None:
        """Pick up versions added to the repository and forget removed ones (the files are read off the event loop).

        Raises:
            FileNotFoundError: the scan found no servable version at all (an unmounted volume?); the
                versions known are kept.
        """
        async with self._scanning:
            encoders = await asyncio.to_thread(self._scan, self._versions.encoders)
            if not encoders:
                raise FileNotFoundError(f"no servable model version in {self.repo}")
            self._publish(encoders)

    async def _rescan_every_period(self) -> None:
        while True:
            await asyncio.sleep(self.rescan_s)
            try:
                await self.rescan()
            except Exception as exc:  # noqa: BLE001 - an unreadable or empty repository: keep serving what the last scan found
                problem = f"{type(exc).__name__}: {exc}"
                if problem != self._scan_error:
                    logger.warning("cannot rescan %s (still serving versions %s): %s", self.repo, sorted(self._versions.encoders), problem)
                self._scan_error = problem
            else:
                self._scan_error = None

    def start(self) -> None:
        """Rescan the repository every ``rescan_s`` in a background task of the running loop, until ``close``."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._rescan_every_period(), name=f"rescan {self.repo}")

    @property
    def newest(self) -> TritonEncoder:
        """The encoder of the newest version (it fills new collections)."""
        encoders = self._versions.encoders
        return encoders[max(encoders)]

    @property
    def stamps(self) -> list[ModelStamp]:
        """The stamps of every known version, oldest first."""
        return list(self._versions.by_stamp)

    def for_stamp(self, stamp: ModelStamp | None) -> TritonEncoder | None:
        """The encoder whose model filled a collection stamped ``stamp``; None when no served version has it.

        The newest version wins when two carry the same weights. Only the last scan is read (never
        the repository), so a version exported after start is found, and a pruned one no longer
        used, within ``rescan_s`` once ``start`` has run.
        """
        if stamp is None:
            return None
        return self._versions.by_stamp.get(stamp)

    def serves(self, stamp: ModelStamp) -> bool:
        """True when some version carries ``stamp``."""
        return self.for_stamp(stamp) is not None

    async def close(self) -> None:
        """Stop the rescans and close the shared channel."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.close()


def catalog_from_settings(settings: Settings) -> ModelCatalog:
    """The catalog of ``settings``'s model repository on its Triton."""
    return ModelCatalog(settings.triton_url, settings.model_repository, RetryPolicy(timeout_s=settings.triton_timeout_s), tls=settings.triton_tls_files())
