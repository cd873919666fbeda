"""A fake ``MilvusClient`` for unit tests: collections in dicts, failures as real pymilvus exceptions.

It answers the calls ``core.index.ImageIndex`` makes, the way the Milvus 2.3 server does (codes
measured against it: 100 for a missing collection, 1600 for a missing alias). The integration
tests run the same behaviour against the real server.
"""

from __future__ import annotations

from typing import Any

from pymilvus import MilvusException
from pymilvus.client.types import LoadState

from core.milvus_errors import ALIAS_NOT_FOUND, COLLECTION_NOT_FOUND


class _Schema:
    def add_field(self, *args: Any, **kwargs: Any) -> None:
        pass


class _IndexParams:
    def add_index(self, *args: Any, **kwargs: Any) -> None:
        pass


class FakeMilvusClient:
    """Collections with a description and rows; one alias table; a log of every call by name."""

    def __init__(self) -> None:
        self.collections: dict[str, dict[str, Any]] = {}
        self.aliases: dict[str, str] = {}
        self.calls: list[str] = []
        self.fail_with: BaseException | None = None

    def add(self, name: str, description: str, rows: dict[str, dict[str, Any]] | None = None) -> None:
        """A loaded collection with ``description`` and ``rows`` (id -> fields)."""
        self.collections[name] = {"description": description, "rows": dict(rows or {})}

    def _enter(self, name: str, collection: str | None = None) -> dict[str, Any] | None:
        self.calls.append(name)
        if self.fail_with is not None:
            raise self.fail_with
        if collection is None:
            return None
        if collection not in self.collections:
            raise MilvusException(COLLECTION_NOT_FOUND, f"collection not found[collection={collection}]")
        return self.collections[collection]

    def describe_alias(self, alias: str, timeout: float | None = None) -> dict[str, str]:
        self._enter("describe_alias")
        if alias not in self.aliases:
            raise MilvusException(ALIAS_NOT_FOUND, f"alias not found[alias={alias}]")
        return {"alias": alias, "collection_name": self.aliases[alias]}

    def describe_collection(self, collection: str, timeout: float | None = None) -> dict[str, Any]:
        entry = self._enter("describe_collection", collection)
        assert entry is not None
        return {"collection_name": collection, "description": entry["description"]}

    def get_load_state(self, collection: str, timeout: float | None = None) -> dict[str, LoadState]:
        self._enter("get_load_state")
        return {"state": LoadState.Loaded if collection in self.collections else LoadState.NotExist}

    def search(self, collection: str, data: list[list[float]], limit: int, **kwargs: Any) -> list[list[dict[str, Any]]]:
        entry = self._enter("search", collection)
        assert entry is not None
        hits = [{"id": item_id, "distance": 1.0, "entity": {"uri": row.get("uri", ""), "labels": []}} for item_id, row in entry["rows"].items()]
        return [hits[:limit]]

    def get(self, collection: str, ids: list[str], output_fields: list[str] | None = None, timeout: float | None = None) -> list[dict[str, Any]]:
        entry = self._enter("get", collection)
        assert entry is not None
        return [{"id": item_id, **entry["rows"][item_id]} for item_id in ids if item_id in entry["rows"]]

    def query(self, collection: str, filter: str = "", output_fields: list[str] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        entry = self._enter("query", collection)
        assert entry is not None
        if output_fields == ["count(*)"]:
            return [{"count(*)": len(entry["rows"])}]
        return [{"id": item_id, "content_hash": row.get("content_hash", "")} for item_id, row in entry["rows"].items() if f'"{item_id}"' in filter]

    def upsert(self, collection: str, rows: list[dict[str, Any]], timeout: float | None = None) -> None:
        entry = self._enter("upsert", collection)
        assert entry is not None
        entry["rows"].update({row["id"]: row for row in rows})

    def create_schema(self, description: str = "", **kwargs: Any) -> _Schema:
        self._enter("create_schema")
        self._pending_description = description
        return _Schema()

    def prepare_index_params(self) -> _IndexParams:
        return _IndexParams()

    def create_collection(self, name: str, **kwargs: Any) -> None:
        self._enter("create_collection")
        self.add(name, self._pending_description)

    def load_collection(self, name: str, timeout: float | None = None) -> None:
        self._enter("load_collection", name)

    def create_alias(self, collection: str, alias: str, timeout: float | None = None) -> None:
        self._enter("create_alias", collection)
        self.aliases[alias] = collection

    def alter_alias(self, collection: str, alias: str, timeout: float | None = None) -> None:
        self._enter("alter_alias", collection)
        self.aliases[alias] = collection

    def drop_collection(self, collection: str, timeout: float | None = None) -> None:
        self._enter("drop_collection")
        self.collections.pop(collection, None)

    def close(self) -> None:
        pass

    @property
    def writes(self) -> list[str]:
        """The calls so far that change Milvus."""
        changing = {"create_schema", "create_collection", "load_collection", "create_alias", "alter_alias", "drop_collection", "upsert"}
        return [call for call in self.calls if call in changing]
