"""``core.milvus_search`` against the installed pymilvus: the same request and the same rows as ``MilvusClient.search``, without its per-cell decoding.

No server: a ``MilvusClient`` and its ``GrpcHandler`` are built without connecting, around a stub
that records the ``SearchRequest`` it is sent and answers a ``SearchResults`` made here.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pymilvus import MilvusClient, MilvusException
from pymilvus.client import grpc_handler
from pymilvus.client.grpc_handler import GrpcHandler
from pymilvus.client.search_result import SearchResult
from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

from core import milvus_search
from core.index import ImageIndex
from core.milvus_errors import CollectionMissing
from core.records import METADATA_FIELDS, ModelStamp

FIELDS = ["uri", "labels", *METADATA_FIELDS]


def answer(topks: list[int], int_ids: bool = False, nullable: bool = False, with_json: bool = False) -> schema_pb2.SearchResultData:
    """A search answer of ``sum(topks)`` hits over the fields a SearchText reads (as Milvus 2.3 sends them)."""
    n = sum(topks)
    data = schema_pb2.SearchResultData(num_queries=len(topks), top_k=max(topks), topks=topks, primary_field_name="id")
    if int_ids:
        data.ids.int_id.data.extend(range(100, 100 + n))
    else:
        data.ids.str_id.data.extend(f"v{i}" for i in range(n))
    data.scores.extend(float(np.float32(0.9 - i / 100)) for i in range(n))
    uri = data.fields_data.add(field_name="uri", type=schema_pb2.VarChar)
    uri.scalars.string_data.data.extend(f"file:///images/{i}.jpg" for i in range(n))
    labels = data.fields_data.add(field_name="labels", type=schema_pb2.Array)
    labels.scalars.array_data.element_type = schema_pb2.VarChar
    for i in range(n):
        labels.scalars.array_data.data.add().string_data.data.extend(["cat", "red"][: i % 3])
    for name in ("width", "height", "bytes", "modified_time", "capture_time"):
        column = data.fields_data.add(field_name=name, type=schema_pb2.Int64)
        column.scalars.long_data.data.extend(i * 7 - 1 for i in range(n))
        if nullable and name == "capture_time":
            column.valid_data.extend(i % 2 == 0 for i in range(n))
    formats = data.fields_data.add(field_name="format", type=schema_pb2.VarChar)
    formats.scalars.string_data.data.extend(["JPEG", "PNG", ""][i % 3] for i in range(n))
    if with_json:
        extra = data.fields_data.add(field_name="extra", type=schema_pb2.JSON)
        extra.scalars.json_data.data.extend(json.dumps({"n": i}).encode() for i in range(n))
    return data


def pymilvus_rows(data: schema_pb2.SearchResultData) -> list[list[dict[str, Any]]]:
    """What ``MilvusClient.search`` returns for ``data``, as plain dicts."""
    return [[{**hit, "entity": dict(hit["entity"])} for hit in hits] for hits in SearchResult(data, -1)]


@pytest.mark.parametrize(
    "kind",
    [{"topks": [18]}, {"topks": [3, 0, 5]}, {"topks": [4], "int_ids": True}, {"topks": [6], "nullable": True}, {"topks": [2], "with_json": True}],
    ids=["one-query", "three-queries", "int-ids", "nullable", "json"],
)
def test_decode_gives_the_rows_pymilvus_gives(kind: dict[str, Any]) -> None:
    data = answer(**kind)
    assert milvus_search.decode(data) == pymilvus_rows(data)


def test_a_column_it_does_not_decode_is_left_to_pymilvus() -> None:
    data = answer([2])
    vectors = data.fields_data.add(field_name="vector", type=schema_pb2.FloatVector)
    vectors.vectors.dim = 2
    vectors.vectors.float_vector.data.extend([0.1, 0.2, 0.3, 0.4])
    with pytest.raises(milvus_search.Undecodable):
        milvus_search.decode(data)


class RecordingStub:
    """A Milvus gRPC stub whose ``Search`` records each request and answers ``response``."""

    def __init__(self, response: milvus_pb2.SearchResults):
        self.response = response
        self.requests: list[tuple[bytes, float | None, Any]] = []

    def Search(self, request: milvus_pb2.SearchRequest, timeout: float | None = None, metadata: Any = None) -> milvus_pb2.SearchResults:
        sent = [(key, "(the time)" if key == "client-request-unixmsec" else value) for key, value in metadata or ()]
        self.requests.append((request.SerializeToString(deterministic=True), timeout, sent))
        return self.response


def offline_client(response: milvus_pb2.SearchResults) -> tuple[MilvusClient, RecordingStub]:
    """A ``MilvusClient`` whose handler talks to a ``RecordingStub`` (never connected)."""
    stub = RecordingStub(response)
    handler = object.__new__(GrpcHandler)
    handler.__dict__.update(_stub=stub, _address="localhost:19530", _channel=None)
    client = object.__new__(MilvusClient)
    client.__dict__.update(_handler=handler, _config=SimpleNamespace(db_name=""))
    return client, stub


def search_args() -> dict[str, Any]:
    vector = np.random.default_rng(3).standard_normal(512).astype(np.float32)
    return {
        "data": [vector.tolist()],
        "limit": 18,
        "filter": 'array_contains(labels, "cat")',
        "output_fields": FIELDS,
        "search_params": {"metric_type": "COSINE", "params": {"ef": 64}},
        "timeout": 4.5,
    }


def test_the_request_and_the_rows_are_pymilvus_own() -> None:
    response = milvus_pb2.SearchResults(status=common_pb2.Status(), results=answer([18]))
    theirs, their_stub = offline_client(response)
    ours, our_stub = offline_client(response)
    expected = theirs.search("c_1", **search_args())
    rows = milvus_search.search(ours, "c_1", **search_args())
    assert our_stub.requests == their_stub.requests  # the same bytes, timeout and metadata (but the time it was sent)
    assert rows == [[{**hit, "entity": dict(hit["entity"])} for hit in hits] for hits in expected]


def test_a_refusal_is_pymilvus_own_exception() -> None:
    refused = milvus_pb2.SearchResults(status=common_pb2.Status(code=100, reason="collection not found[collection=c_1]"))
    client, _ = offline_client(refused)
    with pytest.raises(MilvusException) as raised:
        milvus_search.search(client, "c_1", **search_args())
    assert raised.value.code == 100


def test_the_index_search_does_not_build_pymilvus_search_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-cell decoding (about 1.2 ms of CPU for the 18 hits of a SearchText) is not on the search path; the hits are the same."""

    def refused(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("pymilvus's SearchResult was built")

    response = milvus_pb2.SearchResults(status=common_pb2.Status(), results=answer([18]))
    client, stub = offline_client(response)
    index = ImageIndex("http://localhost:19530", "images", ModelStamp("m", "c" * 64, 512), client=client)
    index._schemas["c_1"] = 3  # the schema of the collection, as its description would tell
    expected = [(row["id"], row["entity"]["uri"], row["entity"]["labels"]) for row in milvus_search.decode(response.results)[0]]
    monkeypatch.setattr(grpc_handler, "SearchResult", refused)
    hits = index.search("c_1", np.ones(512, np.float32), 18)
    assert [(hit.id, hit.uri, hit.labels) for hit in hits] == expected
    assert len(stub.requests) == 1


def test_a_missing_collection_is_still_collection_missing() -> None:
    refused = milvus_pb2.SearchResults(status=common_pb2.Status(code=100, reason="collection not found[collection=c_1]"))
    client, _ = offline_client(refused)
    index = ImageIndex("http://localhost:19530", "images", ModelStamp("m", "c" * 64, 512), client=client)
    index._schemas["c_1"] = 3
    with pytest.raises(CollectionMissing):
        index.search("c_1", np.ones(512, np.float32), 10)


def test_a_column_shorter_than_the_hits_is_left_to_pymilvus() -> None:
    data = answer([2])
    short = data.fields_data.add(field_name="tags", type=schema_pb2.Array)  # one cell for two hits (compact nullable data)
    short.scalars.array_data.element_type = schema_pb2.VarChar
    short.scalars.array_data.data.add().string_data.data.extend(["a"])
    ours, _ = offline_client(milvus_pb2.SearchResults(status=common_pb2.Status(), results=data))
    rows = milvus_search.search(ours, "c_1", **search_args())
    assert [[{**hit, "entity": dict(hit["entity"])} for hit in hits] for hits in rows] == pymilvus_rows(data)
