"""A fake ``MilvusClient`` for unit tests: collections in dicts, failures as real pymilvus exceptions.

It implements ``core.milvus_port.MilvusPort`` (the calls ``core.index.ImageIndex`` makes) the way
the Milvus 2.3 server answers them through pymilvus 2.6, and
the congruence suite (``tests/support/congruence.py``) holds it against the real server case by case:

- searches rank the stored vectors by the collection's metric (COSINE or IP), best first, after
  the filter, and honour ``limit`` (and an ``offset`` in the search parameters) as Milvus does;
  a range search (``radius``, ``range_filter``) keeps ``radius < score <= range_filter`` on float32 scores;
- filters are parsed, not guessed: only the expression forms this project builds
  (``core.filters.build_expression``, ``id in [...]`` of the hash queries, ``source in [...]`` of
  the reindex count) are understood, and anything else raises ``FakeRefused`` instead of being
  ignored;
- rows keep exactly the collection's fields (a row with a field too many or too few is refused
  as pymilvus refuses it), and reads return the fields asked for;
- error codes were measured against the server: 100 for a missing collection, 1600 for a missing
  alias.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from pymilvus import MilvusException
from pymilvus.client.types import LoadState
from pymilvus.exceptions import DataNotMatchException

from core.milvus_errors import ALIAS_NOT_FOUND, COLLECTION_NOT_FOUND
from core.milvus_port import MilvusPort
from core.records import ModelStamp

Row = dict[str, Any]
ALIAS_EXISTS = 1602  # Milvus 2.3 to creating an alias that exists (measured, as the other codes)
UNEXPECTED = 65535  # Milvus 2.3's code for errors without a code of their own (a vector of another dimension)
Predicate = Callable[[Mapping[str, Any]], bool]


class FakeRefused(ValueError):
    """A call the fake does not model (an expression form this project never builds, say): a bug in a test or in the product."""


class _Schema:
    """Records the fields ``ImageIndex`` adds, so that rows can be held to them."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.fields: dict[str, dict[str, Any]] = {}

    def add_field(self, field_name: str, datatype: Any, /, **kwargs: Any) -> None:
        self.fields[field_name] = {"datatype": datatype, **kwargs}


class _IndexParams:
    def __init__(self) -> None:
        self.indexes: dict[str, dict[str, Any]] = {}

    def add_index(self, field_name: str, /, **kwargs: Any) -> None:
        self.indexes[field_name] = kwargs


class _Pages:
    """A query iterator: pages of ``batch_size`` rows, then an empty page."""

    def __init__(self, rows: list[Row], batch_size: int) -> None:
        self.pages = [rows[i : i + batch_size] for i in range(0, len(rows), max(batch_size, 1))]

    def next(self) -> list[Row]:
        return self.pages.pop(0) if self.pages else []

    def close(self) -> None:
        self.pages = []


# -- expressions ----------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<int>-?[0-9]+)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>!=|>=|<=|[\[\](),>]))')
_SCALAR_FIELDS = frozenset({"id", "uri", "source", "content_hash", "format"})
_INT_FIELDS = frozenset({"width", "height", "bytes", "modified_time", "capture_time"})  # the typed metadata (schema 3)
_ARRAY_FIELDS = frozenset({"labels"})


def _tokens(expression: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    while position < len(expression):
        if expression[position:].strip() == "":
            break
        match = _TOKEN.match(expression, position)
        if match is None:
            raise FakeRefused(f"the fake cannot read {expression[position : position + 40]!r} in the expression {expression[:200]!r}")
        kind = match.lastgroup
        assert kind is not None
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


class _Parser:
    """The expression forms this project builds: ``(term) and (term) ...``, each term one of
    ``array_contains_all(labels, [..])``, ``array_contains_any(labels, [..])``, ``not array_contains_any(labels, [..])``,
    ``FIELD in [..]``, ``FIELD != "..."``, ``FIELD like "prefix%"``, and ``FIELD >= INT`` or ``FIELD <= INT`` on the integer fields."""

    def __init__(self, expression: str, fields: frozenset[str] | None) -> None:
        self.expression = expression
        self.tokens = _tokens(expression)
        self.at = 0
        self.fields = fields

    def refuse(self, why: str) -> FakeRefused:
        return FakeRefused(f"the fake does not model this expression ({why}): {self.expression[:200]!r}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, kind: str, value: str | None = None) -> str:
        token = self.peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            raise self.refuse(f"expected {value or kind} at token {self.at}")
        self.at += 1
        return token[1]

    def parse(self) -> Predicate:
        if not self.tokens:
            return lambda row: True
        predicate = self.conjunction()
        if self.peek() is not None:
            raise self.refuse(f"unexpected {self.peek()} at token {self.at}")
        return predicate

    def conjunction(self) -> Predicate:
        terms = [self.term()]
        while self.peek() == ("word", "and"):
            self.at += 1
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else lambda row: all(term(row) for term in terms)

    def term(self) -> Predicate:
        token = self.peek()
        if token == ("punct", "("):
            self.at += 1
            inner = self.conjunction()
            self.take("punct", ")")
            return inner
        if token == ("word", "not"):
            self.at += 1
            negated = self.term()
            return lambda row: not negated(row)
        name = self.take("word")
        if name in ("array_contains_all", "array_contains_any"):
            self.take("punct", "(")
            field = self.field(_ARRAY_FIELDS)
            self.take("punct", ",")
            wanted = set(self.strings())
            self.take("punct", ")")
            if name == "array_contains_all":
                return lambda row: wanted <= set(row.get(field) or [])
            return lambda row: bool(wanted & set(row.get(field) or []))
        if name in _INT_FIELDS:
            return self.bound(self.field(_INT_FIELDS, name))
        return self.comparison(self.field(_SCALAR_FIELDS, name))

    def bound(self, field: str) -> Predicate:
        """``FIELD >= INT`` or ``FIELD <= INT``, the forms ``core.filters.metadata_conditions`` builds."""
        operator = self.take("punct")
        if operator not in (">=", "<="):
            raise self.refuse(f"operator {operator} on {field}")
        value = int(self.take("int"))
        if operator == ">=":
            return lambda row: int(row[field]) >= value
        return lambda row: int(row[field]) <= value

    def comparison(self, field: str) -> Predicate:
        operator = self.peek()
        if operator == ("word", "in"):
            self.at += 1
            values = set(self.strings())
            return lambda row: row.get(field) in values
        if operator == ("punct", "!="):
            self.at += 1
            value = self.string()
            return lambda row: row.get(field) != value
        if operator == ("punct", ">") and field == "id":  # a scan resumed after an id (MilvusRows.scan_vectors); Milvus compares UTF-8 bytes
            self.at += 1
            after = self.string()
            return lambda row: str(row["id"]) > after
        if operator == ("word", "like"):
            self.at += 1
            pattern = self.string()
            if not pattern.endswith("%") or "%" in pattern[:-1]:
                raise self.refuse("like with a pattern other than a prefix")
            if pattern.endswith("\\%"):  # Milvus 2.3 reads a backslash before the % as its escape: no wildcard is left
                return lambda row: row.get(field) == pattern
            prefix = pattern[:-1]  # "_" is no wildcard in Milvus 2.3 (measured)
            return lambda row: str(row.get(field, "")).startswith(prefix)
        raise self.refuse(f"operator {operator} on {field}")

    def field(self, allowed: frozenset[str], name: str | None = None) -> str:
        name = name or self.take("word")
        if name not in allowed:
            raise self.refuse(f"{name} is not a field the product filters on that way")
        if self.fields is not None and name not in self.fields:
            raise MilvusException(1100, f"failed to create query plan: cannot parse expression: field {name} not exist")
        return name

    def string(self) -> str:
        value = json.loads(self.take("string"))
        assert isinstance(value, str)
        return value

    def strings(self) -> list[str]:
        self.take("punct", "[")
        values = [self.string()]
        while self.peek() == ("punct", ","):
            self.at += 1
            values.append(self.string())
        self.take("punct", "]")
        return values


def parse_expression(expression: str, fields: frozenset[str] | None = None) -> Predicate:
    """A row predicate for a Milvus ``expression`` of the forms this project builds; ``FakeRefused`` for any other form."""
    return _Parser(expression, fields).parse()


# -- the client -----------------------------------------------------------------------------------


def _score(metric: str, query: np.ndarray, stored: np.ndarray) -> float:
    if metric == "IP":
        return float(np.dot(query, stored))
    if metric == "COSINE":
        norms = float(np.linalg.norm(query) * np.linalg.norm(stored))
        return float(np.dot(query, stored) / norms) if norms else 0.0
    raise FakeRefused(f"the fake ranks by COSINE or IP, not {metric}")


def _range(params: Mapping[str, Any]) -> Callable[[float], bool]:
    """Which scores a range search keeps: ``radius < score <= range_filter`` (COSINE and IP, Milvus 2.3), on float32 scores."""
    radius, ceiling = params.get("radius"), params.get("range_filter")
    if radius is None:
        if ceiling is not None:
            raise FakeRefused("the fake models a range_filter only with a radius")
        return lambda score: True
    low, high = np.float32(radius), np.float32(ceiling if ceiling is not None else np.inf)
    return lambda score: bool(low < np.float32(score) <= high)


class FakeMilvusClient:
    """Collections with a description, fields and rows; one alias table; a log of every call by name.

    ``collections[name]`` holds ``description``, ``rows`` (id -> row), ``fields`` (the schema's
    field names, or None for a collection made with ``add``, whose rows are not checked),
    ``dimension`` and ``metric``.
    """

    def __init__(self) -> None:
        self.collections: dict[str, dict[str, Any]] = {}
        self.aliases: dict[str, str] = {}
        self.calls: list[str] = []
        self.fail_with: BaseException | None = None

    def add(self, name: str, description: str, rows: dict[str, dict[str, Any]] | None = None) -> None:
        """A loaded collection with ``description`` and ``rows`` (id -> fields), made out of band (rows are not checked)."""
        stamp = ModelStamp.parse(description)
        self.collections[name] = {
            "description": description,
            "rows": {item_id: {"id": item_id, **row} for item_id, row in (rows or {}).items()},
            "fields": None,
            "dimension": stamp.dimension if stamp else None,
            "metric": "COSINE",
        }

    def _enter(self, name: str, collection: str | None = None) -> dict[str, Any] | None:
        self.calls.append(name)
        if self.fail_with is not None:
            raise self.fail_with
        if collection is None:
            return None
        if collection not in self.collections:
            raise MilvusException(COLLECTION_NOT_FOUND, f"collection not found[collection={collection}]")
        return self.collections[collection]

    def _entry(self, name: str, collection: str) -> dict[str, Any]:
        entry = self._enter(name, collection)
        assert entry is not None
        return entry

    @staticmethod
    def _project(row: Mapping[str, Any], output_fields: list[str]) -> Row:
        """The primary key and the fields asked for, as Milvus returns them."""
        return {"id": row["id"], **{field: row[field] for field in output_fields if field != "id" and field in row}}

    @staticmethod
    def _matching(entry: Mapping[str, Any], expression: str) -> list[Row]:
        predicate = parse_expression(expression, entry["fields"])
        return [row for row in entry["rows"].values() if predicate(row)]

    # -- collections and aliases

    def create_schema(self, *, auto_id: bool, enable_dynamic_field: bool, description: str) -> _Schema:
        self._enter("create_schema")
        if auto_id or enable_dynamic_field:
            raise FakeRefused("the fake models collections without auto ids or dynamic fields")
        return _Schema(description)

    def prepare_index_params(self) -> _IndexParams:
        return _IndexParams()

    def create_collection(self, collection_name: str, /, *, schema: Any, index_params: Any, consistency_level: str, timeout: float | None = None) -> None:
        self._enter("create_collection")
        assert isinstance(schema, _Schema) and isinstance(index_params, _IndexParams), "the fake takes its own schema and index parameters"
        if collection_name in self.collections:
            return  # Milvus 2.3 answers success when the collection exists with this schema, and keeps its rows
        vector = schema.fields["vector"]
        self.collections[collection_name] = {
            "description": schema.description,
            "rows": {},
            "fields": frozenset(schema.fields),
            "dimension": int(vector["dim"]),
            "metric": index_params.indexes["vector"]["metric_type"],
        }

    def load_collection(self, collection_name: str, /, *, timeout: float | None = None) -> None:
        self._enter("load_collection", collection_name)

    def has_collection(self, collection_name: str, /, *, timeout: float | None = None) -> bool:
        self._enter("has_collection")
        return collection_name in self.collections

    def describe_collection(self, collection_name: str, /, *, timeout: float | None = None) -> dict[str, Any]:
        entry = self._entry("describe_collection", collection_name)
        return {"collection_name": collection_name, "description": entry["description"]}

    def list_collections(self, *, timeout: float | None = None) -> list[str]:
        self._enter("list_collections")
        return list(self.collections)

    def drop_collection(self, collection_name: str, /, *, timeout: float | None = None) -> None:
        self._enter("drop_collection")
        self.collections.pop(collection_name, None)  # dropping a missing collection succeeds, as in Milvus 2.3
        for alias in [alias for alias, target in self.aliases.items() if target == collection_name]:
            del self.aliases[alias]  # its aliases go with it

    def get_load_state(self, collection_name: str, /, *, timeout: float | None = None) -> dict[str, LoadState]:
        self._enter("get_load_state")
        return {"state": LoadState.Loaded if collection_name in self.collections else LoadState.NotExist}

    def describe_alias(self, alias: str, /, *, timeout: float | None = None) -> dict[str, str]:
        self._enter("describe_alias")
        if alias not in self.aliases:
            raise MilvusException(ALIAS_NOT_FOUND, f"alias not found[alias={alias}]")
        return {"alias": alias, "collection_name": self.aliases[alias]}

    def create_alias(self, collection_name: str, alias: str, /, *, timeout: float | None = None) -> None:
        self._enter("create_alias", collection_name)
        if alias in self.aliases:
            raise MilvusException(ALIAS_EXISTS, f"alias exists and already aliased to another collection[alias={alias}]")
        self.aliases[alias] = collection_name

    def alter_alias(self, collection_name: str, alias: str, /, *, timeout: float | None = None) -> None:
        self._enter("alter_alias", collection_name)
        if alias not in self.aliases:
            raise MilvusException(ALIAS_NOT_FOUND, f"alias not found[alias={alias}]")
        self.aliases[alias] = collection_name

    def drop_alias(self, alias: str, /, *, timeout: float | None = None) -> None:
        self._enter("drop_alias")
        self.aliases.pop(alias, None)

    def flush(self, collection_name: str, /, *, timeout: float | None = None) -> None:
        self._enter("flush", collection_name)

    def list_indexes(self, collection_name: str, /) -> list[str]:
        self._enter("list_indexes", collection_name)
        return ["vector"]

    def describe_index(self, collection_name: str, index_name: str, /, *, timeout: float | None = None) -> dict[str, Any]:
        entry = self._entry("describe_index", collection_name)
        return {"field_name": index_name, "metric_type": entry["metric"], "pending_index_rows": 0, "indexed_rows": len(entry["rows"])}

    # -- rows

    def upsert(self, collection_name: str, data: list[dict[str, Any]], /, *, timeout: float | None = None) -> dict[str, int]:
        entry = self._entry("upsert", collection_name)
        fields = entry["fields"]
        for row in data:
            if fields is not None:
                if extra := sorted(set(row) - fields):
                    raise DataNotMatchException(message=f"Attempt to insert an unexpected field `{extra[0]}` to collection without enabling dynamic field")
                if missing := sorted(fields - set(row)):
                    raise DataNotMatchException(message=f"Insert missed an field `{missing[0]}` to collection without set nullable==true or set default_value")
            if entry["dimension"] is not None and "vector" in row and len(row["vector"]) != entry["dimension"]:
                raise MilvusException(UNEXPECTED, f"the length({len(row['vector'])}) of float data should divide the dim({entry['dimension']})")
        entry["rows"].update({row["id"]: dict(row) for row in data})
        return {"upsert_count": len(data)}

    def delete(self, collection_name: str, /, *, ids: list[str], timeout: float | None = None) -> dict[str, int]:
        entry = self._entry("delete", collection_name)
        for item_id in ids:
            entry["rows"].pop(item_id, None)
        return {"delete_count": len(ids)}

    def get(self, collection_name: str, /, *, ids: list[str], output_fields: list[str], timeout: float | None = None) -> list[Row]:
        entry = self._entry("get", collection_name)
        return [self._project(entry["rows"][item_id], output_fields) for item_id in dict.fromkeys(ids) if item_id in entry["rows"]]

    def query(
        self, collection_name: str, /, *, filter: str, output_fields: list[str], timeout: float | None = None, consistency_level: str = "Session"
    ) -> list[Row]:
        entry = self._entry("query", collection_name)
        matching = self._matching(entry, filter)
        if output_fields == ["count(*)"]:
            return [{"count(*)": len(matching)}]
        if not filter:
            raise FakeRefused("Milvus 2.3 refuses a query with an empty expression and no limit")
        return [self._project(row, output_fields) for row in matching]

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
    ) -> _Pages:
        entry = self._entry("query_iterator", collection_name)
        rows = sorted(self._matching(entry, filter), key=lambda row: str(row["id"]))  # pages in primary key order
        return _Pages([self._project(row, output_fields) for row in rows], batch_size)

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
    ) -> list[list[Row]]:
        entry = self._entry("search", collection_name)
        metric = search_params.get("metric_type", entry["metric"])
        if metric != entry["metric"]:
            raise FakeRefused(f"the fake searches {collection_name} by its index's metric {entry['metric']}, not {metric}")
        offset = int(search_params.get("offset", 0))
        within = _range(search_params.get("params", {}))
        matching = self._matching(entry, filter)
        results = []
        for query in data:
            vector = np.asarray(query, dtype=np.float32)
            if entry["dimension"] is not None and len(vector) != entry["dimension"]:
                raise MilvusException(UNEXPECTED, f"fail to Search: query vector of dimension {len(vector)}, the collection's is {entry['dimension']}")
            scored = []
            for row in matching:
                if "vector" not in row:
                    raise FakeRefused(f"row {row['id']!r} of {collection_name} has no vector to rank (give the rows of the test one)")
                scored.append((_score(metric, vector, np.asarray(row["vector"], dtype=np.float32)), row))
            scored = [(score, row) for score, row in scored if within(score)]
            scored.sort(key=lambda pair: -pair[0])  # stable: equal scores keep the order of insertion
            hits = [{"id": row["id"], "distance": score, "entity": {f: row[f] for f in output_fields if f in row}} for score, row in scored]
            results.append(hits[offset : offset + limit])
        return results

    def close(self) -> None:
        pass

    @property
    def writes(self) -> list[str]:
        """The calls so far that change Milvus."""
        changing = {"create_schema", "create_collection", "load_collection", "create_alias", "alter_alias", "drop_alias", "drop_collection", "upsert", "delete"}
        return [call for call in self.calls if call in changing]


def _implements_the_port(client: FakeMilvusClient) -> MilvusPort:
    return client  # mypy holds the fake to the port here
