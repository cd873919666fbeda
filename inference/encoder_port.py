"""The encoders the search engine and the reindex job depend on, as typed ports.

``inference.triton_client.TritonEncoder`` is the one adapter behind ``Encoder``, and
``inference.models.ModelCatalog`` the one behind ``EncoderCatalog``; the engine
(``search.engine.SearchEngine``) and the job (``reindex.job.Reindexer``) take these Protocols, so
a fake implements them and mypy holds it to them (``tests/unit/fake_reindex.py``,
``tests/unit/test_ports.py``). Each member is one that a caller uses, under the adapter's names and
signatures: a new call means a new member, which the fakes must then implement.

``ImageEncoder`` is what the reindex job uses (crops and image vectors); ``Encoder`` adds what the
engine uses too: texts, readiness and the manifest, whose model id and checksum are the model
stamp of the vectors it makes (``core.records.ModelStamp.of``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from core.manifest import Manifest
from core.records import ModelStamp
from inference.images import PreprocessConfig
from inference.tokenizer import ClipTokenizer, TokenBatch


class ImageEncoder(Protocol):
    """Image vectors of one model version: how to crop, and the vectors of the crops."""

    @property
    def preprocess_config(self) -> PreprocessConfig:
        """How images are resized, cropped and normalized for this model."""
        ...

    async def encode_pixels(self, pixel_values: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """Normalized image embeddings ``[batch, dim]`` for preprocessed ``pixel_values``."""
        ...


class Encoder(ImageEncoder, Protocol):
    """Text and image vectors of one model version, and the model they come from."""

    @property
    def manifest(self) -> Manifest:
        """The exported model: its id and checksum (the stamp of its vectors), and whether its weights are random."""
        ...

    @property
    def tokenizer(self) -> ClipTokenizer:
        """The model's tokenizer (the engine bounds query texts with it before the cache key)."""
        ...

    async def encode_texts(self, texts: list[str], deadline: float | None = None) -> tuple[np.ndarray, TokenBatch]:
        """Tokenize and encode texts; the vectors and the token batch (lengths, truncation)."""
        ...

    async def ready(self) -> bool:
        """True when the server has both models of this version loaded."""
        ...


class EncoderCatalog(Protocol):
    """The encoders of every model version served, and which one encodes for a collection."""

    @property
    def newest(self) -> Encoder:
        """The encoder of the newest version (it fills new collections)."""
        ...

    @property
    def stamps(self) -> list[ModelStamp]:
        """The stamps of every version served, oldest first."""
        ...

    def for_stamp(self, stamp: ModelStamp | None) -> Encoder | None:
        """The encoder whose model filled a collection stamped ``stamp``; None when no served version has it."""
        ...

    def serves(self, stamp: ModelStamp) -> bool:
        """True when some version carries ``stamp``."""
        ...

    def start(self) -> None:
        """Start the background work (rescans) on the running loop, until ``close``."""
        ...

    async def close(self) -> None:
        """Stop the background work and close the channel."""
        ...
