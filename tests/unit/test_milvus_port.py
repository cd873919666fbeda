"""The port ``core.milvus_port.MilvusPort`` against the installed pymilvus client and the unit tests' fake.

pymilvus publishes no types, so mypy cannot hold ``MilvusClient`` to the port: this test does, by
signature. The fake is held to it by mypy (``fake_milvus._implements_the_port``) and here as well.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from typing import Any, Protocol

import pytest
from pymilvus import MilvusClient

from core.milvus_port import MilvusPort
from tests.unit.fake_milvus import FakeMilvusClient

MEMBERS = sorted(name for name, value in vars(MilvusPort).items() if callable(value) and not name.startswith("_"))

# Keywords of the port that pymilvus 2.6 takes only through a method's ``**kwargs``, and where it reads them.
# Any other keyword must be a named parameter of the pymilvus method: ``**kwargs`` would swallow a misspelt one
# (``consistancy_level=``) without a word, and the call would run with pymilvus's default.
THROUGH_KWARGS: dict[str, frozenset[str]] = {
    "create_schema": frozenset({"auto_id", "enable_dynamic_field", "description"}),  # CollectionSchema(**kwargs), orm/schema.py
    "create_collection": frozenset({"consistency_level"}),  # client/prepare.py, the CreateCollection request
    "query": frozenset({"consistency_level"}),  # client/prepare.py, the Query request
    "query_iterator": frozenset({"consistency_level"}),  # the iterator's Query requests
    "list_collections": frozenset({"timeout"}),  # client/grpc_handler.py list_collections(timeout=...)
}


def mismatches(port_member: Callable[..., object], implementation: Callable[..., object], through_kwargs: Collection[str] = ()) -> list[str]:
    """How ``implementation`` fails to take every call the port's member allows (empty when it takes them all).

    Args:
        port_member: The port's method (its positional-only parameters are passed by position, the
            keyword-only ones by name).
        implementation: The method that must take those calls.
        through_kwargs: The port's keywords that ``implementation`` may take through ``**kwargs``; any
            other keyword must be one of its named parameters.
    """
    wanted = list(inspect.signature(port_member).parameters.values())[1:]  # without self
    given = inspect.signature(implementation).parameters
    params = [p for p in given.values() if p.name != "self"]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    by_position = len([p for p in wanted if p.kind is p.POSITIONAL_ONLY])  # the arguments the port passes by position
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    takes_args = any(p.kind is p.VAR_POSITIONAL for p in params)
    problems: list[str] = []
    if by_position > len(positional) and not takes_args:
        problems.extend(f"no positional parameter for {p.name}" for p in wanted[len(positional) : by_position])
    for parameter in (p for p in wanted if p.kind is p.KEYWORD_ONLY):
        match = given.get(parameter.name)
        if match is None or match.kind in (match.VAR_POSITIONAL, match.VAR_KEYWORD):
            if not takes_kwargs:
                problems.append(f"no keyword {parameter.name}")
            elif parameter.name not in through_kwargs:
                problems.append(f"no keyword {parameter.name} (only **kwargs, which would swallow it)")
        elif match.kind is match.POSITIONAL_ONLY:
            problems.append(f"{parameter.name} is positional-only")
        elif match in positional[:by_position]:
            problems.append(f"{parameter.name} is also filled by position")
        elif parameter.default is not parameter.empty and match.default is match.empty:
            problems.append(f"{parameter.name} has no default")
    # A required parameter is filled by position (the first by_position positional ones) or by a keyword the port always passes.
    always_passed = {p.name for p in wanted if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
    for parameter in params:
        if parameter.default is not parameter.empty or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter in positional[:by_position]:
            continue
        if parameter.kind is parameter.POSITIONAL_ONLY or parameter.name not in always_passed:
            problems.append(f"{parameter.name} is required but the port never passes it")
    return problems


def test_the_port_names_calls_that_image_index_makes() -> None:
    assert {"search", "query", "query_iterator", "upsert", "delete", "get", "describe_alias", "create_alias", "alter_alias", "drop_alias"} <= set(MEMBERS)


@pytest.mark.parametrize("member", MEMBERS)
def test_the_pymilvus_client_takes_every_call_of_the_port(member: str) -> None:
    assert mismatches(getattr(MilvusPort, member), getattr(MilvusClient, member), THROUGH_KWARGS.get(member, ())) == []


def test_the_allow_list_names_only_keywords_the_port_passes_and_pymilvus_does_not_name() -> None:
    for member, keywords in THROUGH_KWARGS.items():
        port = inspect.signature(getattr(MilvusPort, member)).parameters
        client = inspect.signature(getattr(MilvusClient, member)).parameters
        assert keywords <= set(port), f"{member}: the port does not pass {sorted(keywords - set(port))}"
        assert keywords.isdisjoint(client), f"{member}: pymilvus names {sorted(keywords & set(client))}; drop them from THROUGH_KWARGS"


@pytest.mark.parametrize("member", MEMBERS)
def test_the_fake_takes_every_call_of_the_port(member: str) -> None:
    assert mismatches(getattr(MilvusPort, member), getattr(FakeMilvusClient, member)) == []


# --- The check finds drift (each method below breaks the port's call one way) -------------------------------------


class Port(Protocol):
    def query(self, collection_name: str, /, *, filter: str, consistency_level: str = "Session") -> Any: ...

    def upsert(self, collection_name: str, data: list[Any], /, *, timeout: float | None = None) -> Any: ...

    def get(self, collection_name: str, /, *, ids: list[str]) -> Any: ...


class Drifted:
    """An implementation that drifted from ``Port``, one method per kind of drift."""

    def query(self, collection_name: str, filter: str = "", **kwargs: Any) -> Any:  # consistency_level only through **kwargs
        return None

    def upsert(self, collection_name: str, /, *, data: list[Any], timeout: float, partition: str) -> Any:
        return None

    def get(self, collection_name: str, ids: list[str], /) -> Any:
        return None


def test_the_check_sees_drift() -> None:
    assert mismatches(Port.query, Drifted.query) == ["no keyword consistency_level (only **kwargs, which would swallow it)"]
    assert mismatches(Port.query, Drifted.query, {"consistency_level"}) == []
    assert mismatches(Port.upsert, Drifted.upsert) == [
        "no positional parameter for data",
        "timeout has no default",
        "data is required but the port never passes it",
        "timeout is required but the port never passes it",
        "partition is required but the port never passes it",
    ]
    assert mismatches(Port.get, Drifted.get) == ["ids is positional-only", "ids is required but the port never passes it"]


class Misspelt(Protocol):
    """The port's ``query`` with its consistency level misspelt."""

    def query(self, collection_name: str, /, *, filter: str, output_fields: list[str], consistancy_level: str = "Session") -> Any: ...


def test_a_misspelt_keyword_is_not_taken_by_pymilvus_kwargs() -> None:
    """pymilvus's query takes ``**kwargs``, so only the allow-list tells ``consistency_level`` from a misspelling."""
    assert mismatches(Misspelt.query, MilvusClient.query, THROUGH_KWARGS["query"]) == ["no keyword consistancy_level (only **kwargs, which would swallow it)"]


def test_a_parameter_filled_by_position_and_by_keyword_is_a_mismatch() -> None:
    def implementation(collection_name: str, ids: list[str] | None = None) -> None: ...

    class Both(Protocol):
        def get(self, collection_name: str, ids: list[str], /, *, ids_again: int = 0) -> None: ...

    class Twice(Protocol):
        def get(self, collection_name: str, positional: list[str], /, *, ids: list[str]) -> None: ...

    assert mismatches(Both.get, implementation) == ["no keyword ids_again"]
    assert mismatches(Twice.get, implementation) == ["ids is also filled by position"]
