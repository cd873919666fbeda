"""The slice of the pymilvus ``MilvusClient`` API that ``core.index.ImageIndex`` calls, as a typed port.

``ImageIndex`` talks to Milvus through ``MilvusPort`` only: the real ``pymilvus.MilvusClient``
satisfies it (pymilvus publishes no types, so ``tests/unit/test_milvus_port.py`` holds the
signatures against the installed client), and the unit tests' fake (``tests/unit/fake_milvus.py``)
implements it without ``type: ignore``. The collection name is positional-only, as ``ImageIndex``
passes it; every other argument is passed by keyword, under pymilvus's names. Only what
``ImageIndex`` calls is here: a new call means a new member, which the fake must then implement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class SchemaBuilder(Protocol):
    """What ``MilvusClient.create_schema`` returns: fields are added one by one."""

    def add_field(self, field_name: str, datatype: Any, /, **kwargs: Any) -> Any:
        """Add a field (``is_primary``, ``max_length``, ``dim``, ``element_type``, ``max_capacity``)."""
        ...


class IndexParamsBuilder(Protocol):
    """What ``MilvusClient.prepare_index_params`` returns."""

    def add_index(self, field_name: str, /, **kwargs: Any) -> Any:
        """Add an index on a field (``index_type``, ``metric_type``, ``params``)."""
        ...


class RowIterator(Protocol):
    """What ``MilvusClient.query_iterator`` returns: pages of rows until an empty one."""

    def next(self) -> list[dict[str, Any]]:
        """The next page of rows; empty when every row was returned."""
        ...

    def close(self) -> None:
        """Release the iterator on the server."""
        ...


class MilvusPort(Protocol):
    """The ``MilvusClient`` calls of ``ImageIndex`` (pymilvus 2.6 names; Milvus 2.3 answers)."""

    # -- collections and aliases

    def create_schema(self, *, auto_id: bool, enable_dynamic_field: bool, description: str) -> SchemaBuilder: ...

    def prepare_index_params(self) -> IndexParamsBuilder: ...

    def create_collection(
        self, collection_name: str, /, *, schema: SchemaBuilder, index_params: IndexParamsBuilder, consistency_level: str, timeout: float | None = None
    ) -> None: ...

    def load_collection(self, collection_name: str, /, *, timeout: float | None = None) -> None: ...

    def has_collection(self, collection_name: str, /, *, timeout: float | None = None) -> bool: ...

    def describe_collection(self, collection_name: str, /, *, timeout: float | None = None) -> Mapping[str, Any]: ...

    def list_collections(self, *, timeout: float | None = None) -> list[str]: ...

    def drop_collection(self, collection_name: str, /, *, timeout: float | None = None) -> None: ...

    def get_load_state(self, collection_name: str, /, *, timeout: float | None = None) -> Mapping[str, Any]: ...

    def describe_alias(self, alias: str, /, *, timeout: float | None = None) -> Mapping[str, Any]: ...

    def create_alias(self, collection_name: str, alias: str, /, *, timeout: float | None = None) -> None: ...

    def alter_alias(self, collection_name: str, alias: str, /, *, timeout: float | None = None) -> None: ...

    def drop_alias(self, alias: str, /, *, timeout: float | None = None) -> None: ...

    def flush(self, collection_name: str, /, *, timeout: float | None = None) -> None: ...

    def list_indexes(self, collection_name: str, /) -> list[str]: ...

    def describe_index(self, collection_name: str, index_name: str, /, *, timeout: float | None = None) -> Mapping[str, Any]: ...

    # -- rows

    def upsert(self, collection_name: str, data: list[dict[str, Any]], /, *, timeout: float | None = None) -> Any: ...

    def delete(self, collection_name: str, /, *, ids: list[str], timeout: float | None = None) -> Any: ...

    def get(self, collection_name: str, /, *, ids: list[str], output_fields: list[str], timeout: float | None = None) -> Sequence[Mapping[str, Any]]: ...

    def query(
        self, collection_name: str, /, *, filter: str, output_fields: list[str], timeout: float | None = None, consistency_level: str = "Session"
    ) -> Sequence[Mapping[str, Any]]: ...

    def query_iterator(
        self,
        collection_name: str,
        /,
        *,
        batch_size: int,
        filter: str,
        output_fields: list[str],
        timeout: float | None = None,
        consistency_level: str = "Session",
    ) -> RowIterator: ...

    def search(
        self,
        collection_name: str,
        /,
        *,
        data: list[list[float]],
        limit: int,
        filter: str,
        output_fields: list[str],
        search_params: Mapping[str, Any],
        timeout: float | None = None,
    ) -> Sequence[Sequence[Mapping[str, Any]]]: ...

    def close(self) -> None: ...
