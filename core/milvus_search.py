"""A Milvus search whose answer is decoded column by column: pymilvus's request and call, without its per-cell result decoding.

pymilvus 2.6 turns a search answer into rows one cell at a time through its type dispatch
(``SearchResult``, ``field_data_extractors.decode_cell``): 18 hits of the 8 fields a SearchText
reads took about 1.2 ms of CPU on the benchmark machine, the largest single cost of a query in the
gateway. ``search`` here builds the same request with pymilvus's own ``Prepare`` and its
Session-consistency timestamp, calls the same gRPC stub under pymilvus's own retry and error
decorators (so failures surface as the same ``MilvusException`` codes for
``core.milvus_errors.classify``), and decodes each returned column of scalars in one pass
(``decode``), giving the rows ``MilvusClient.search`` gives. A client that is not a
``MilvusClient`` (the unit tests' fake) is simply asked ``search``. An answer holding a column of
another kind (vectors, a dynamic field) is decoded by pymilvus as before.

It reads a few of pymilvus's internals (the connection, its stub, the call context); pymilvus is
pinned (``constraints.txt``), and ``tests/unit/test_milvus_search.py`` holds this module to the
installed version: the same request bytes and the same rows as ``MilvusClient.search``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pymilvus import MilvusClient
from pymilvus.client import ts_utils
from pymilvus.client.grpc_handler import _api_level_md
from pymilvus.client.prepare import Prepare
from pymilvus.client.search_result import SearchResult
from pymilvus.client.utils import check_status
from pymilvus.decorators import retry_on_rpc_failure
from pymilvus.grpc_gen import schema_pb2

from core.milvus_port import MilvusPort

Row = dict[str, Any]
# The scalar columns decoded here (schema_pb2.DataType) and the ScalarField member that holds each.
_COLUMNS = {
    schema_pb2.Bool: "bool_data",
    schema_pb2.Int8: "int_data",
    schema_pb2.Int16: "int_data",
    schema_pb2.Int32: "int_data",
    schema_pb2.Int64: "long_data",
    schema_pb2.Float: "float_data",
    schema_pb2.Double: "double_data",
    schema_pb2.String: "string_data",
    schema_pb2.VarChar: "string_data",
}


class Undecodable(Exception):
    """A column of a kind ``decode`` leaves to pymilvus."""


def _cells(field: schema_pb2.FieldData) -> list[Any]:
    """Every value of one returned column, in order (None where ``valid_data`` marks a null)."""
    if field.is_dynamic:
        raise Undecodable(field.field_name)
    if field.type in _COLUMNS:
        values: list[Any] = list(getattr(field.scalars, _COLUMNS[field.type]).data)
    elif field.type == schema_pb2.Array:
        element = _COLUMNS.get(field.scalars.array_data.element_type)
        if element is None:
            raise Undecodable(field.field_name)
        values = [list(getattr(cell, element).data) for cell in field.scalars.array_data.data]
    elif field.type == schema_pb2.JSON:
        values = [json.loads(raw) for raw in field.scalars.json_data.data]
    else:
        raise Undecodable(field.field_name)
    if field.valid_data:
        values = [value if valid else None for value, valid in zip(values, field.valid_data, strict=False)]
    return values


def decode(results: schema_pb2.SearchResultData) -> list[list[Row]]:
    """The rows of a search answer as ``MilvusClient.search`` returns them: per query, ``{pk: id, "distance": score, "entity": {field: value}}``."""
    if results.HasField("element_indices") or results.highlight_results:
        raise Undecodable("element indices or highlights")
    key = results.primary_field_name or "id"
    ids: Sequence[Any] = list(results.ids.int_id.data if results.ids.HasField("int_id") else results.ids.str_id.data)
    scores = list(results.scores)
    names = [field.field_name for field in results.fields_data]
    entities = [dict(zip(names, values, strict=True)) for values in zip(*(_cells(field) for field in results.fields_data), strict=True)] if names else []
    rows = [{key: pk, "distance": score, "entity": entities[i] if names else {}} for i, (pk, score) in enumerate(zip(ids, scores, strict=True))]
    found: list[list[Row]] = []
    start = 0
    for topk in results.topks:
        found.append(rows[start : start + topk])
        start += topk
    return found


def _search(handler: Any, request: Any, timeout: float | None = None, context: Any = None) -> schema_pb2.SearchResultData:
    """``GrpcHandler._execute_search`` without building a ``SearchResult``: the answer's data, its status checked."""
    response = handler._stub.Search(request, timeout=timeout, metadata=_api_level_md(context))
    check_status(response.status)
    return response.results


_search.__name__ = "search"  # as pymilvus's decorators name the call in their messages
_search_call = retry_on_rpc_failure()(_search)  # with error_handler and tracing_request inside, as GrpcHandler.search has them


def search(
    client: MilvusPort,
    collection: str,
    *,
    data: list[list[float]],
    limit: int,
    filter: str,
    output_fields: list[str],
    search_params: Mapping[str, Any],
    timeout: float | None = None,
) -> Sequence[Sequence[Mapping[str, Any]]]:
    """``client.search(collection, ...)``'s rows; for a ``MilvusClient``, decoded by column (``decode``)."""
    if not isinstance(client, MilvusClient):
        return client.search(collection, data=data, limit=limit, filter=filter, output_fields=output_fields, search_params=search_params, timeout=timeout)
    handler: Any = client._get_connection()
    context = client._generate_call_context()
    kwargs: dict[str, Any] = {}  # what MilvusClient.search and GrpcHandler.search pass on to Prepare
    default_consistency = ts_utils.construct_guarantee_ts(collection, kwargs, handler.server_address, context.get_db_name())
    request = Prepare.search_requests_with_expr(
        collection_name=collection,
        anns_field="",
        param=dict(search_params),
        limit=limit,
        data=data,
        ids=None,
        expr=filter,
        partition_names=None,
        output_fields=output_fields,
        round_decimal=-1,
        ranker=None,
        highlighter=None,
        use_default_consistency=default_consistency,
        expr_params={},
        **kwargs,
    )
    results = _search_call(handler, request, timeout=timeout, context=context)
    try:
        return decode(results)
    except (Undecodable, ValueError, IndexError):  # a shape it does not know (a short column of a nullable field): pymilvus decodes it
        return SearchResult(results, -1)
