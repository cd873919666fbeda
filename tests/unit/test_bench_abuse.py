"""The chaos fuzz's seeds are valid requests: a real in-process gateway (servicers, telemetry, size caps and error mapping) on fake Milvus and Triton answers each OK."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.abuse import fuzz, leaves, seed_requests, with_odd_value
from bench.chaos import violations
from core.index import ImageIndex
from core.manifest import Manifest
from core.records import ModelStamp
from core.settings import GatewaySettings
from gateway.admission import AdmissionInterceptor
from gateway.errors import ErrorMappingInterceptor
from gateway.server import request_caps
from gateway.servicers import EmbeddingServicer, IndexServicer, SearchServicer
from gateway.telemetry import TelemetryInterceptor
from inference.images import ImageLimits
from inference.models import ModelCatalog
from search.engine import SearchEngine
from tests.support.servers import real_server
from tests.unit.fake_milvus import FakeMilvusClient
from tests.unit.fake_triton import FakeTritonClient
from text2image.v1 import text2image_pb2 as pb
from text2image.v1 import text2image_pb2_grpc as pb_grpc

pytestmark = pytest.mark.torch  # bench.chaos imports the export (bench.run, export.main: transformers)


@pytest.fixture()
async def gateway(model_repo: Path) -> AsyncIterator[str]:
    settings = GatewaySettings(auth="open")
    models = ModelCatalog("fake:1", model_repo, client=FakeTritonClient())
    index = ImageIndex("http://fake", "alias", ModelStamp.of(Manifest.read(model_repo)), client=FakeMilvusClient(), serves=models.serves)
    engine = SearchEngine(models, index, max_top_k=settings.max_top_k, max_batch=settings.max_batch, limits=ImageLimits(), alias_refresh_s=60)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(engine, 10), server)
        pb_grpc.add_EmbeddingServiceServicer_to_server(EmbeddingServicer(engine, 10), server)
        pb_grpc.add_IndexServiceServicer_to_server(IndexServicer(engine, 10), server)

    async with real_server([TelemetryInterceptor(), AdmissionInterceptor(request_caps(settings)), ErrorMappingInterceptor()], register) as address:
        yield address
    await engine.close()


async def test_every_seed_answers_ok_unmutated_and_the_mutations_reach_the_handlers(gateway: str) -> None:
    report = await asyncio.to_thread(fuzz, gateway, "", 60, 0)
    assert report["seeds"]["not_ok"] == []
    # The next pages of the seeds of top_k 1 over the two seed images (2 SearchText, 1 SearchImage) and of the FindDuplicates seed of max_images 1, with live tokens.
    assert report["seeds"]["pages"] == 4
    assert report["seeds"]["codes"] == {"OK": sum(len(m) for m in seed_requests().values()) + 4}
    assert report["cases"] == sum(report["codes"].values()) == 60
    # Mutated seeds are refused for what the mutation did, and some still make sense: both outcomes occur.
    assert report["codes"].get("OK", 0) > 0 and report["codes"].get("INVALID_ARGUMENT", 0) > 0
    assert {"odd value", "bytes"} <= set(report["by_kind"])


def test_a_seed_that_is_not_ok_breaks_the_campaign() -> None:
    report: dict[str, Any] = {
        "fuzz": {
            "seeds": {
                "sent": 1,
                "codes": {"RESOURCE_EXHAUSTED": 1},
                "not_ok": [{"method": "SearchText", "seed": 0, "code": "RESOURCE_EXHAUSTED", "detail": "big"}],
            },
            "codes": {},
        },
        "flood": {"codes": {}},
        "faults": [],
        "reindex": [],
        "slow_clients": {"answered_meanwhile": 1},
    }
    assert violations(report) == ["fuzz: seed 0 of SearchText answered RESOURCE_EXHAUSTED unmutated (big)"]
    report["fuzz"]["seeds"] = {"sent": 0, "codes": {}, "not_ok": []}
    assert violations(report) == ["fuzz: no seed request was sent unmutated"]


def test_an_odd_value_changes_one_field_and_leaves_the_seed_alone() -> None:
    rng = random.Random(3)
    for messages in seed_requests().values():
        for message in messages:
            before = message.SerializeToString()
            odd = with_odd_value(message, rng)
            assert message.SerializeToString() == before
            if leaves(message):
                assert odd is not None and odd != message
            else:
                assert odd is None  # GetIndexInfoRequest has no field to change
    nested = {field.name for _, field in leaves(pb.SearchTextRequest(filter=pb.Filter(labels=pb.LabelFilter())))}
    assert {"query", "top_k", "min_score", "all_of", "any_of", "none_of", "ids", "uri_prefix"} <= nested
