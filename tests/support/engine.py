"""The search engine over a fake Milvus client and a fake Triton client, for the unit tests."""

from __future__ import annotations

from pathlib import Path

from core.index import ImageIndex
from core.manifest import Manifest
from core.records import ModelStamp
from inference.images import ImageLimits
from inference.models import ModelCatalog
from search.engine import SearchEngine
from tests.unit.fake_milvus import FakeMilvusClient
from tests.unit.fake_triton import FakeTritonClient


class Parts:
    def __init__(self, repo: Path) -> None:
        self.milvus = FakeMilvusClient()
        self.triton = FakeTritonClient()
        self.stamp = ModelStamp.of(Manifest.read(repo))
        self.models = ModelCatalog("fake:1", repo, client=self.triton)  # not started: a test rescans the repository itself
        index = ImageIndex("http://fake", "alias", self.stamp, client=self.milvus, serves=self.models.serves)
        self.engine = SearchEngine(self.models, index, max_top_k=10, max_batch=4, limits=ImageLimits(), alias_refresh_s=60)
