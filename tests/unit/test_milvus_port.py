"""The port ``core.milvus_port.MilvusPort`` against the installed pymilvus client and the unit tests' fake.

pymilvus publishes no types, so mypy cannot hold ``MilvusClient`` to the port: this test does, by
signature. The fake is held to it by mypy (``fake_milvus._implements_the_port``) and here as well.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
from pymilvus import MilvusClient

from core.milvus_port import MilvusPort
from tests.unit.fake_milvus import FakeMilvusClient

MEMBERS = sorted(name for name, value in vars(MilvusPort).items() if callable(value) and not name.startswith("_"))


def mismatches(port_member: Callable[..., object], implementation: Callable[..., object]) -> list[str]:
    """How ``implementation`` fails to take every call the port's member allows (empty when it takes them all)."""
    wanted = list(inspect.signature(port_member).parameters.values())[1:]  # without self
    given = inspect.signature(implementation).parameters
    params = [p for p in given.values() if p.name != "self"]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    problems = []
    for place, parameter in enumerate(p for p in wanted if p.kind is p.POSITIONAL_ONLY):
        if place >= len(positional):
            problems.append(f"no positional parameter for {parameter.name}")
    for parameter in (p for p in wanted if p.kind is p.KEYWORD_ONLY):
        match = given.get(parameter.name)
        if match is None and not takes_kwargs:
            problems.append(f"no keyword {parameter.name}")
        elif match is not None and match.kind is match.POSITIONAL_ONLY:
            problems.append(f"{parameter.name} is positional-only")
        elif match is not None and parameter.default is not parameter.empty and match.default is match.empty:
            problems.append(f"{parameter.name} has no default")
    required = [p for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    passed = {p.name for p in wanted if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
    for place, parameter in enumerate(required):
        if parameter.kind is not parameter.KEYWORD_ONLY and place < sum(p.kind is p.POSITIONAL_ONLY for p in wanted):
            continue
        if parameter.name not in passed:
            problems.append(f"{parameter.name} is required but the port never passes it")
    return problems


def test_the_port_names_calls_that_image_index_makes() -> None:
    assert {"search", "query", "query_iterator", "upsert", "delete", "get", "describe_alias", "create_alias", "alter_alias", "drop_alias"} <= set(MEMBERS)


@pytest.mark.parametrize("member", MEMBERS)
def test_the_pymilvus_client_takes_every_call_of_the_port(member: str) -> None:
    assert mismatches(getattr(MilvusPort, member), getattr(MilvusClient, member)) == []


@pytest.mark.parametrize("member", MEMBERS)
def test_the_fake_takes_every_call_of_the_port(member: str) -> None:
    assert mismatches(getattr(MilvusPort, member), getattr(FakeMilvusClient, member)) == []
