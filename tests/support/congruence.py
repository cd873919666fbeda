"""Congruence, the qdrant-client way: one suite of index cases, run through ``ImageIndex`` against the
unit tests' fake client (``tests/unit/fake_milvus.py``) and against the real Milvus of the session.

Each case drives ``ImageIndex`` (and, where the adapter relies on a client behaviour it cannot
trigger on its own, the port ``core.milvus_port.MilvusPort`` directly) and returns what it
observed: hit ids and scores in order, counts, rows, exception classes. Both backends must observe
exactly the case's ``expected``, so the fake and the server agree with each other case by case
(scores within float32 rounding). The expected rankings are computed here with numpy from the
vectors, independently of both.

The suite lives here, once; two test modules run it. ``tests/unit/test_index_congruence.py`` runs
it against the fake (no servers: unit runs and ``-m "not integration"`` include it), and
``tests/integration/test_index_congruence.py`` against the session's stack (``conftest.stack``),
each case under an alias of its own that is dropped afterwards.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusException

from core.filters import MetadataConditions, Range, SearchFilter, build_expression, literal
from core.index import ImageIndex
from core.milvus_port import MilvusPort
from core.records import SCHEMA_VERSION, ImageMetadata, ModelStamp, make_row
from devstack.stack import LocalStack
from tests.unit.fake_milvus import FakeMilvusClient

STAMP = ModelStamp("congruence/clip", "a" * 64, 4)
OTHER = ModelStamp("congruence/other-clip", "b" * 64, 4)
QUERY = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
SIDEWAYS = np.array([0.0, 1.0, 0.0, 0.0], dtype=np.float32)

# id: (vector, uri, labels, source); every score against QUERY and SIDEWAYS is distinct.
ROWS: dict[str, tuple[list[float], str, list[str], str]] = {
    "a": ([1.0, 0.1, 0.0, 0.0], "mem://park/a.png", ["dog", "grass"], "/src/one"),
    "b": ([1.0, 0.5, 0.0, 0.0], "mem://park/b.png", ["dog"], "/src/one"),
    "c": ([1.0, 1.0, 0.0, 0.0], "mem://home/c.png", ["cat", "grass"], "/src/one"),
    "d": ([0.2, 1.0, 0.0, 0.0], 'mem://home/"quoted"\\d.png', ['say "hi"', "back\\slash"], "/src/two"),
    "e": ([0.0, 0.0, 1.0, 0.0], "mem://home_/e.png", ["cat"], "/src/two"),
    "f": ([-1.0, 0.3, 0.0, 0.0], "mem://homeX/f.png", ["dog", "cat"], "/src/two"),
}


def rows(*ids: str) -> list[dict[str, Any]]:
    return [make_row(i, np.asarray(ROWS[i][0], dtype=np.float32), ROWS[i][1], ROWS[i][2], f"h-{i}", source=ROWS[i][3]) for i in ids or ROWS]


def ranked(query: np.ndarray, ids: list[str] | None = None) -> list[tuple[str, float]]:
    """``(id, cosine)`` of ``ids`` (every row by default) against ``query``, best first, by numpy."""
    scores = [(i, float(np.dot(query, ROWS[i][0]) / np.linalg.norm(query) / np.linalg.norm(ROWS[i][0]))) for i in ids or ROWS]
    return sorted(scores, key=lambda pair: -pair[1])


def hits(index: ImageIndex, collection: str, top_k: int = 10, search_filter: SearchFilter = SearchFilter(), **kwargs: Any) -> list[tuple[str, float]]:
    expression = build_expression(search_filter, exclude_id=kwargs.pop("exclude_id", None))
    return [(h.id, h.score) for h in index.search(collection, kwargs.pop("query", QUERY), top_k, expression, **kwargs)]


def outcome(call: Callable[[], object]) -> str:
    """The class of the exception ``call`` raised (with the Milvus code, if any), or ``ok``."""
    try:
        call()
    except MilvusException as exc:
        return f"{type(exc).__name__}({exc.code})"
    except Exception as exc:  # noqa: BLE001  # the class is what the case observes
        return type(exc).__name__
    return "ok"


def value_or_error(call: Callable[[], object]) -> object:
    """What ``call`` returned, or the class of what it raised (as ``outcome`` names it)."""
    result: list[object] = []
    raised = outcome(lambda: result.append(call()))
    return result[0] if raised == "ok" else raised


@dataclass
class Backend:
    """One Milvus (a fake client or the real server) and indexes on it under one alias."""

    kind: str
    alias: str
    index_for: Callable[[ModelStamp], ImageIndex]

    @property
    def index(self) -> ImageIndex:
        return self.index_for(STAMP)

    def filled(self, name: str = "rows", ids: tuple[str, ...] = ()) -> tuple[ImageIndex, str]:
        index = self.index
        collection = index.new_collection(f"{self.alias}_{name}")
        index.upsert(collection, rows(*ids))
        return index, collection


def new_alias() -> str:
    return f"cg_{uuid.uuid4().hex[:10]}"


def fake_backend() -> Backend:
    """A fresh fake client (``tests/unit/fake_milvus.py``) under a new alias."""
    alias = new_alias()
    client = FakeMilvusClient()

    def index_for(stamp: ModelStamp) -> ImageIndex:
        return ImageIndex("http://fake:19530", alias, stamp, client=client)

    return Backend("fake", alias, index_for)


def real_backend(stack: LocalStack) -> Iterator[Backend]:
    """The stack's Milvus under a new alias, for a fixture to ``yield from``; its aliases and collections are dropped afterwards."""
    alias = new_alias()
    made: list[ImageIndex] = []

    def real_index_for(stamp: ModelStamp) -> ImageIndex:
        made.append(ImageIndex(stack.milvus_uri, alias, stamp, timeout_s=30, token=stack.milvus_token))
        return made[-1]

    yield Backend("real", alias, real_index_for)
    cleaner = real_index_for(STAMP)
    port = cleaner._connect()
    for name in (alias, f"{alias}_previous"):
        outcome(functools.partial(port.drop_alias, name, timeout=30))
    for name in port.list_collections(timeout=30):
        if name.startswith(f"{alias}_"):
            port.drop_collection(name, timeout=60)
    for index in made:
        index.close()


@dataclass(frozen=True)
class Case:
    run: Callable[[Backend], object]
    expected: object

    @property
    def name(self) -> str:
        return self.run.__name__


CASES: list[Case] = []


def case(expected: object) -> Callable[[Callable[[Backend], object]], Callable[[Backend], object]]:
    def register(run: Callable[[Backend], object]) -> Callable[[Backend], object]:
        CASES.append(Case(run, expected))
        return run

    return register


def same(observed: object, expected: object) -> bool:
    """Equal, with floats within float32 rounding of the server's distances."""
    if isinstance(expected, float) and isinstance(observed, float):
        return abs(observed - expected) < 1e-5
    if isinstance(expected, (list, tuple)) and isinstance(observed, (list, tuple)):
        return type(observed) is type(expected) and len(observed) == len(expected) and all(map(same, observed, expected))
    if isinstance(expected, dict) and isinstance(observed, dict):
        return observed.keys() == expected.keys() and all(same(observed[k], expected[k]) for k in expected)
    return observed == expected


# -- search: ranking, limits and each filter the product builds ------------------------------------


@case(ranked(QUERY))
def search_ranks_every_row_by_cosine(b: Backend) -> object:
    return hits(*b.filled())


@case(ranked(SIDEWAYS))
def search_ranks_by_the_query_vector(b: Backend) -> object:
    return hits(*b.filled(), query=SIDEWAYS)


@case(ranked(QUERY)[:3])
def search_top_k_limits_the_hits(b: Backend) -> object:
    return hits(*b.filled(), top_k=3)


@case(ranked(QUERY)[:4])
def search_cosine_ignores_the_query_length(b: Backend) -> object:
    return hits(*b.filled(), top_k=4, query=QUERY * 7.5)


@case([ranked(QUERY, ["a"]), ranked(QUERY, ["a", "b", "f"])])
def search_labels_all_of(b: Backend) -> object:
    index, collection = b.filled()
    return [hits(index, collection, search_filter=SearchFilter(all_of=["dog", "grass"])), hits(index, collection, search_filter=SearchFilter(all_of=["dog"]))]


@case(ranked(QUERY, ["a", "c", "e", "f"]))
def search_labels_any_of(b: Backend) -> object:
    return hits(*b.filled(), search_filter=SearchFilter(any_of=["cat", "grass"]))


@case(ranked(QUERY, ["c", "d", "e"]))
def search_labels_none_of(b: Backend) -> object:
    return hits(*b.filled(), search_filter=SearchFilter(none_of=["dog"]))


@case([ranked(QUERY, ["d"]), ranked(QUERY, ["d"])])
def search_labels_with_quotes_and_backslashes(b: Backend) -> object:
    index, collection = b.filled()
    return [
        hits(index, collection, search_filter=SearchFilter(all_of=['say "hi"'])),
        hits(index, collection, search_filter=SearchFilter(any_of=["back\\slash"])),
    ]


@case(ranked(QUERY, ["b", "e"]))
def search_ids(b: Backend) -> object:
    return hits(*b.filled(), search_filter=SearchFilter(ids=["e", "b", "not-there"]))


@case([ranked(QUERY, ["a", "b"]), ranked(QUERY, ["d"]), ranked(QUERY, ["c", "d", "e", "f"])])
def search_uri_prefix(b: Backend) -> object:
    index, collection = b.filled()
    return [hits(index, collection, search_filter=SearchFilter(uri_prefix=prefix)) for prefix in ("mem://park/", 'mem://home/"quoted"', "mem://home")]


@case({"ending in a backslash": "InvalidArgument", "a backslash inside": ranked(QUERY, ["d"])})
def search_uri_prefix_with_a_backslash(b: Backend) -> object:
    """Measured on Milvus 2.3: a backslash before the ``%`` that ``build_expression`` appends escapes it, so a
    prefix ending in one would match nothing: ``core.filters`` refuses it. A backslash elsewhere is a plain character."""
    index, collection = b.filled()
    return {
        "ending in a backslash": value_or_error(lambda: hits(index, collection, search_filter=SearchFilter(uri_prefix='mem://home/"quoted"\\'))),
        "a backslash inside": hits(index, collection, search_filter=SearchFilter(uri_prefix='mem://home/"quoted"\\d.p')),
    }


@case(ranked(QUERY, ["e"]))
def search_uri_prefix_underscore_is_no_wildcard(b: Backend) -> object:
    return hits(*b.filled(), search_filter=SearchFilter(uri_prefix="mem://home_"))


@case(ranked(QUERY, ["b", "c", "d", "e", "f"]))
def search_excluding_an_id(b: Backend) -> object:
    return hits(*b.filled(), exclude_id="a")


@case(ranked(QUERY, ["e", "f"]))
def search_all_filters_together(b: Backend) -> object:
    return hits(
        *b.filled(), search_filter=SearchFilter(any_of=["grass", "cat"], none_of=["grass"], ids=["c", "e", "f", "a"], uri_prefix="mem://home"), exclude_id="c"
    )


@case([ranked(QUERY, ["a", "b", "c"]), []])
def search_min_score(b: Backend) -> object:
    index, collection = b.filled()
    return [hits(index, collection, min_score=0.5), hits(index, collection, search_filter=SearchFilter(ids=["f"]), min_score=0.0)]


@case([])
def search_an_empty_collection(b: Backend) -> object:
    index = b.index
    return hits(index, index.new_collection(f"{b.alias}_empty"))


# -- range search and id-ordered scans (FindDuplicates, search.duplicates) -------------------------

# Two rows exactly along QUERY (cosine 1.0 in float32 on both backends: a boundary both compute exactly).
ALONG = {"x1": [2.0, 0.0, 0.0, 0.0], "x2": [1.0, 0.0, 0.0, 0.0]}


def with_along(b: Backend) -> tuple[ImageIndex, str]:
    index, collection = b.filled()
    index.upsert(collection, [make_row(i, np.asarray(v, np.float32), f"mem://along/{i}", ["along"], f"h-{i}", source="/src/along") for i, v in ALONG.items()])
    return index, collection


def in_range(query: np.ndarray, low: float, ids: list[str] | None = None, strict: bool = False, high: float = 2.0) -> list[tuple[str, float]]:
    """``(id, cosine)`` of the rows (ROWS and ALONG) with ``low <= cosine`` (``<`` when ``strict``) and ``cosine <= high``, best first, ties by id, by numpy."""
    vectors = {**{i: row[0] for i, row in ROWS.items()}, **ALONG}
    scores = [(i, float(np.float32(np.dot(query, v) / np.linalg.norm(query) / np.linalg.norm(v)))) for i, v in vectors.items() if ids is None or i in ids]
    kept = [(i, s) for i, s in scores if (s > low if strict else s >= low) and s <= high]
    return sorted(kept, key=lambda pair: (-round(pair[1], 5), pair[0]))


def by_score_then_id(found: list[tuple[str, float]]) -> list[tuple[str, float]]:
    return sorted(found, key=lambda pair: (-round(pair[1], 5), pair[0]))


@case([in_range(QUERY, 0.5), in_range(SIDEWAYS, 0.5), in_range(QUERY, 1.0), in_range(QUERY, 0.9)[:3]])
def range_search_keeps_the_scores_at_least_min_score(b: Backend) -> object:
    """nq > 1 in one call, each query on its own; a score equal to min_score counts (the rows along QUERY score exactly 1.0); limit caps each list."""
    index, collection = with_along(b)
    both = index.range_search(collection, np.stack([QUERY, SIDEWAYS]), 0.5, 20)
    return [
        *map(by_score_then_id, both),
        by_score_then_id(index.range_search(collection, QUERY[None], 1.0, 20)[0]),
        by_score_then_id(index.range_search(collection, QUERY[None], 0.9, 3)[0]),
    ]


@case([in_range(QUERY, 0.3, ["a", "c", "e", "f"]), in_range(SIDEWAYS, -1.0, ["x1", "x2"]), []])
def range_search_with_filters(b: Backend) -> object:
    index, collection = with_along(b)
    labels = build_expression(SearchFilter(any_of=["cat", "grass"]))
    return [
        by_score_then_id(index.range_search(collection, QUERY[None], 0.3, 20, labels)[0]),
        by_score_then_id(index.range_search(collection, SIDEWAYS[None], -1.0, 20, build_expression(SearchFilter(uri_prefix="mem://along/")))[0]),
        index.range_search(collection, QUERY[None], 0.3, 20, build_expression(SearchFilter(ids=["e"])))[0],
    ]


@case([in_range(QUERY, 0.5, high=1.0), in_range(QUERY, 0.5, high=0.99), in_range(QUERY, 1.0, strict=True), in_range(QUERY, 0.99, strict=True)])
def range_search_bounds_of_the_port(b: Backend) -> object:
    """What ``MilvusRows.range_search`` relies on, through the port: ``radius < score <= range_filter`` for COSINE."""
    index, collection = with_along(b)
    port: MilvusPort = index._connect()

    def ranged(params: dict[str, float]) -> list[tuple[str, float]]:
        search_params = {"metric_type": "COSINE", "params": {"ef": 64, **params}}
        hits = port.search(collection, data=[QUERY.tolist()], limit=20, filter="", output_fields=[], search_params=search_params, timeout=30)[0]
        return by_score_then_id([(str(h["id"]), float(h["distance"])) for h in hits])

    return [
        ranged({"radius": 0.5, "range_filter": 1.0}),
        ranged({"radius": 0.5, "range_filter": 0.99}),
        ranged({"radius": 1.0, "range_filter": 2.0}),
        ranged({"radius": 0.99}),
    ]


def scanned(index: ImageIndex, collection: str, expression: str = "", after: str | None = None, batch: int = 2) -> list[str]:
    scan = index.scan_vectors(collection, expression, after, batch)
    ids: list[str] = []
    try:
        while page := scan.next():
            ids += [item_id for item_id, _ in page]
    finally:
        scan.close()
    return ids


@case([sorted([*ROWS, *ALONG]), sorted(i for i in [*ROWS, *ALONG] if i > "c"), ["e", "f"], [], list(map(float, ROWS["d"][0])), ["a", "f"]])
def scans_in_id_order_and_resume_after_an_id(b: Backend) -> object:
    index, collection = with_along(b)
    vectors = index.vectors_of(collection, ["f", "not-there", "a"])
    return [
        scanned(index, collection),
        scanned(index, collection, after="c"),
        scanned(index, collection, build_expression(SearchFilter(any_of=["cat"])), after="c"),
        scanned(index, collection, after="x2"),
        [float(x) for x in index.scan_vectors(collection, build_expression(SearchFilter(ids=["d"])), batch=5).next()[0][1]],
        sorted(vectors),
    ]


# -- typed metadata (row schema 3) -----------------------------------------------------------------

# id: the metadata stored with ROWS (f: none, as a row carried over from an older collection); times in microseconds.
META: dict[str, ImageMetadata | None] = {
    "a": ImageMetadata(100, 50, 1000, "PNG", 1_600_000_000_000_000, None),
    "b": ImageMetadata(200, 100, 5000, "JPEG", 1_700_000_000_000_000, 1_500_000_000_000_000),
    "c": ImageMetadata(300, 300, 20000, "JPEG", None, 1_650_000_000_000_000),
    "d": ImageMetadata(50, 80, 800, "GIF", 1_650_000_000_000_000, None),
    "e": ImageMetadata(640, 480, 123456, "WEBP", 1_600_000_000_000_000, -1_000_000),
    "f": None,
}
METADATA_FILTERS: dict[str, MetadataConditions] = {
    "width 100..300 (inclusive)": MetadataConditions(width=Range(100, 300)),
    "height up to 80 (unknown left out)": MetadataConditions(height=Range(None, 80)),
    "bytes from 5000": MetadataConditions(bytes=Range(5000)),
    "formats jpeg, Gif": MetadataConditions(formats=("jpeg", "Gif")),
    "modified 1.6e15..1.65e15": MetadataConditions(modified_time=Range(1_600_000_000_000_000, 1_650_000_000_000_000)),
    "modified until 1.65e15 (unknown left out)": MetadataConditions(modified_time=Range(None, 1_650_000_000_000_000)),
    "captured since -1 s": MetadataConditions(capture_time=Range(-1_000_000)),
    "captured until the epoch": MetadataConditions(capture_time=Range(None, 0)),
    "width from 100, JPEG": MetadataConditions(width=Range(100), formats=("JPEG",)),
}
METADATA_SELECTS = {
    "width 100..300 (inclusive)": ["a", "b", "c"],
    "height up to 80 (unknown left out)": ["a", "d"],
    "bytes from 5000": ["b", "c", "e"],
    "formats jpeg, Gif": ["b", "c", "d"],
    "modified 1.6e15..1.65e15": ["a", "d", "e"],
    "modified until 1.65e15 (unknown left out)": ["a", "d", "e"],
    "captured since -1 s": ["b", "c", "e"],
    "captured until the epoch": ["e"],
    "width from 100, JPEG": ["b", "c"],
}


def metadata_rows(*ids: str) -> list[dict[str, Any]]:
    """``rows`` with the metadata of ``META``."""
    return [make_row(i, np.asarray(ROWS[i][0], dtype=np.float32), ROWS[i][1], ROWS[i][2], f"h-{i}", ROWS[i][3], META[i]) for i in ids or ROWS]


def with_metadata(b: Backend) -> tuple[ImageIndex, str]:
    index = b.index
    collection = index.new_collection(f"{b.alias}_typed")
    index.upsert(collection, metadata_rows())
    return index, collection


def schema2_collection(b: Backend) -> tuple[ImageIndex, str]:
    """A collection of row schema 2, made through the port as the code before typed metadata made it."""
    index = b.index
    port: MilvusPort = index._connect()
    name = f"{b.alias}_schema2"
    schema = port.create_schema(auto_id=False, enable_dynamic_field=False, description=STAMP.describe(2))
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=STAMP.dimension)
    schema.add_field("uri", DataType.VARCHAR, max_length=2048)
    schema.add_field("labels", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=32, max_length=128)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
    schema.add_field("source", DataType.VARCHAR, max_length=2048)
    params = port.prepare_index_params()
    params.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 64})
    port.create_collection(name, schema=schema, index_params=params, consistency_level="Session", timeout=60)
    port.load_collection(name, timeout=60)
    index.upsert(name, metadata_rows())  # the typed metadata is left out: schema 2 has no fields for it
    return index, name


@case({name: ranked(QUERY, ids) for name, ids in METADATA_SELECTS.items()})
def search_metadata_ranges(b: Backend) -> object:
    index, collection = with_metadata(b)
    return {name: hits(index, collection, search_filter=SearchFilter(metadata=conditions)) for name, conditions in METADATA_FILTERS.items()}


@case([[("b", META["b"]), ("f", None)], [("c", META["c"]), ("f", None)], [6, 3]])
def metadata_comes_back_with_hits_and_records(b: Backend) -> object:
    index, collection = with_metadata(b)
    found = {h.id: h.metadata for h in index.search(collection, QUERY, 10)}
    records = [(r.id, r.metadata) for r in index.records(collection, ["c", "f"])]
    counted = [index.count(collection), index.count(collection, expression=build_expression(SearchFilter(metadata=MetadataConditions(bytes=Range(5000)))))]
    return [[(i, found[i]) for i in ("b", "f")], records, counted]


@case([2, ranked(QUERY), [None, None], "FailedPrecondition", "FailedPrecondition", ranked(QUERY, ["a", "b"]), ["f"], [None]])
def a_schema_2_collection_serves_without_metadata(b: Backend) -> object:
    index, old = schema2_collection(b)
    metadata_filter = SearchFilter(metadata=MetadataConditions(width=Range(1)))
    new = index.new_collection(f"{b.alias}_moved")
    index.upsert(new, metadata_rows("a", "b"))
    copied = index.copy_rows(old, new, ["f"], {})  # carried over into schema 3: its metadata unknown
    return [
        index.schema_version(old),
        hits(index, old),
        [h.metadata for h in index.search(old, QUERY, 2)],
        outcome(lambda: hits(index, old, search_filter=metadata_filter)),
        outcome(lambda: index.count(old, expression=build_expression(metadata_filter))),
        hits(index, new, search_filter=metadata_filter),  # the carried row has no width: left out
        copied,
        [r.metadata for r in index.records(new, ["f"])],
    ]


# -- rows: upsert, delete, count, reads ------------------------------------------------------------


@case([6, [*ranked(QUERY, ["b", "c", "d", "e", "f"]), ("a", -0.9950371980667114)], [("a", "mem://new/a.png", ["new"])]])
def upsert_replaces_a_row_by_id(b: Backend) -> object:
    index, collection = b.filled()
    index.upsert(collection, [make_row("a", np.array([-1.0, 0.0, 0.0, 0.1], np.float32), "mem://new/a.png", ["new"], "h-a2", source="/src/one")])
    return [index.count(collection), hits(index, collection), [(r.id, r.uri, r.labels) for r in index.records(collection, ["a"])]]


@case([2, 4, ranked(QUERY, ["b", "d", "e", "f"]), {"b": "h-b"}, 0])
def delete_counts_what_existed(b: Backend) -> object:
    index, collection = b.filled()
    deleted = index.delete(collection, ["a", "not-there", "c"])
    return [deleted, index.count(collection), hits(index, collection), index.hashes(collection, ["a", "b"]), index.delete(collection, ["a"])]


@case([6, 3, 3, 2, 0])
def count_with_and_without_an_expression(b: Backend) -> object:
    index, collection = b.filled()
    return [
        index.count(collection),
        index.count(collection, expression=f"source in [{literal('/src/one')}]"),
        index.count(collection, expression=build_expression(SearchFilter(all_of=["dog"]))),
        index.count(collection, expression=build_expression(SearchFilter(uri_prefix="mem://park/"))),
        index.count(collection, expression=f"source in [{literal('/elsewhere')}]"),
    ]


@case([{"a": "h-a", "f": "h-f"}, {i: f"h-{i}" for i in ROWS}, {i: (f"h-{i}", ROWS[i][3]) for i in ROWS}])
def hashes_and_stored_rows(b: Backend) -> object:
    index, collection = b.filled()
    return [index.hashes(collection, ["a", "f", "not-there"]), index.hashes(collection), index.stored(collection)]


@case([[("c", ROWS["c"][1], ROWS["c"][2]), ("a", ROWS["a"][1], ROWS["a"][2])], ROWS["b"][0], "NotFound"])
def records_and_vectors_by_id(b: Backend) -> object:
    index, collection = b.filled()
    return [
        [(r.id, r.uri, r.labels) for r in index.records(collection, ["c", "not-there", "a"])],
        [float(x) for x in index.vector_of(collection, "b")],
        outcome(lambda: index.vector_of(collection, "not-there")),
    ]


@case([sorted(ROWS), [list(map(float, ROWS[i][0])) for i in sorted(ROWS)], [ROWS[i][2] for i in sorted(ROWS)]])
def every_vector_for_evaluations(b: Backend) -> object:
    index, collection = b.filled()
    ids, vectors, labels = index.vectors(collection)
    order = np.argsort(ids)
    return [[ids[i] for i in order], [[float(x) for x in vectors[i]] for i in order], [labels[i] for i in order]]


@case([(sorted({label for row in ROWS.values() for label in row[2]}), True), ([], True)])
def distinct_labels(b: Backend) -> object:
    index, collection = b.filled()
    return [index.labels(collection, 100), index.labels(index.new_collection(f"{b.alias}_empty"), 100)]


@case([["a", "f"], {"a": ("h-a", "/src/one"), "f": ("h-f", "/src/two")}, ranked(QUERY, ["a", "f"])])
def copy_rows_carries_the_rows_that_exist(b: Backend) -> object:
    index, source = b.filled()
    target = index.new_collection(f"{b.alias}_target")
    copied = index.copy_rows(source, target, ["a", "not-there", "f"], {})
    return [sorted(copied), index.stored(target), hits(index, target)]


@case([True, 6])
def seal_covers_every_row(b: Backend) -> object:
    index, collection = b.filled()
    return [index.seal(collection, wait_s=120), index.count(collection)]


# -- collections, aliases, swaps and the stamp -----------------------------------------------------


@case({"active": None, "aliased": None, "info": (0, ""), "named": True, "resolved": True, "orphans": [], "filled": (2, True), "loaded": True})
def the_first_write_creates_the_collection_and_alias(b: Backend) -> object:
    index = b.index
    observed: dict[str, object] = {"active": index.active(), "aliased": index.active_collection(), "info": (index.info().count, index.info().collection)}
    name = index.ensure_active()
    index.upsert(name, rows("a", "b"))
    info = index.info()
    observed.update(named=name.startswith(f"{b.alias}_"), resolved=index.active() == name == index.ensure_active(), orphans=index.orphans())
    observed.update(filled=(info.count, info.collection == name), loaded=index.loaded(name))
    return observed


@case([(None, []), ["second", "third"], ("first", "second", "first"), ("first", []), ("second", ["first"]), ("second", "third"), ("CollectionMissing", [])])
def promote_keeps_one_rollback_step(b: Backend) -> object:
    index = b.index
    first, second, third = (index.new_collection(f"{b.alias}_{n}") for n in ("first", "second", "third"))
    short = {first: "first", second: "second", third: "third", None: None}
    out: list[object] = [index.promote(first), sorted(short[name] or "" for name in index.orphans())]
    swapped = index.promote(second)
    out.append((short[swapped[0]], short[index.active_collection()], short[index.previous_collection()]))
    out.append((short[index.promote(second)[0]], index.promote(second)[1]))  # promoted already: nothing swapped or dropped
    previous, dropped = index.promote(third)
    out.append((short[previous], [short[d] for d in dropped]))
    now, kept = index.rollback()
    out.append((short[now], short[kept]))
    out.append((outcome(lambda: index.stamp_of(first)), index.orphans()))
    return out


@case(["first", ["first"], None, "FailedPrecondition"])
def promote_without_keeping_the_previous(b: Backend) -> object:
    index = b.index
    first, second = (index.new_collection(f"{b.alias}_{n}") for n in ("first", "second"))
    index.promote(first)
    replaced, dropped = index.promote(second, keep_previous=False)
    short = {first: "first", second: "second"}
    return [short[replaced or ""], [short[d] for d in dropped], index.previous_collection(), outcome(index.rollback)]


@case([["orphan"], "ok"])
def orphans_are_the_family_collections_no_alias_points_at(b: Backend) -> object:
    index = b.index
    index.swap_alias(index.new_collection(f"{b.alias}_served"))
    index.new_collection(f"{b.alias}_orphan")
    found = [name.removeprefix(f"{b.alias}_") for name in index.orphans()]
    return [found, outcome(lambda: index.drop(f"{b.alias}_orphan"))]


@case([True, SCHEMA_VERSION, True, "FailedPrecondition", "FailedPrecondition", True])
def the_model_stamp_and_schema_version_in_the_description(b: Backend) -> object:
    index, mine = b.filled()
    theirs_index = b.index_for(OTHER)
    theirs = theirs_index.new_collection(f"{b.alias}_theirs")
    out: list[object] = [index.stamp_of(mine) == STAMP, index.schema_version(mine), theirs_index.stamp_of(theirs) == OTHER]
    out.append(outcome(lambda: index.check_stamp(theirs)))
    index.swap_alias(theirs)
    out.append(outcome(b.index.active))  # a fresh reader meets another model's vectors behind the alias
    out.append(b.index_for(OTHER).active() == theirs)
    return out


@case(["ok", 6])
def creating_a_collection_again_keeps_its_rows(b: Backend) -> object:
    index, collection = b.filled()
    return [outcome(lambda: index.new_collection(collection)), index.count(collection)]


@case(["NotFound", "InvalidArgument", "ok", True, "ok", "FailedPrecondition"])
def run_collections(b: Backend) -> object:
    index = b.index
    out: list[object] = [outcome(lambda: index.run_collection("nightly", create=False)), outcome(lambda: index.run_collection("bad id!"))]
    out.append(outcome(lambda: index.run_collection("nightly")))
    out.append(index.run_collection("nightly", create=False) == f"{b.alias}_run_nightly")
    out.append(outcome(lambda: index.run_collection("nightly")))  # a second shard finds it
    out.append(outcome(lambda: b.index_for(OTHER).run_collection("nightly")))
    return out


# -- missing collections and the error classes -----------------------------------------------------

MISSING_CALLS: dict[str, Callable[[ImageIndex, str], object]] = {
    "search": lambda index, name: index.search(name, QUERY, 3),
    "count": lambda index, name: index.count(name),
    "stamp_of": lambda index, name: index.stamp_of(name),
    "upsert": lambda index, name: index.upsert(name, rows("a")),
    "delete": lambda index, name: index.delete(name, ["a"]),
    "hashes of ids": lambda index, name: index.hashes(name, ["a"]),
    "hashes of every row": lambda index, name: index.hashes(name),
    "records": lambda index, name: index.records(name, ["a"]),
    "vector_of": lambda index, name: index.vector_of(name, "a"),
    "copy_rows from": lambda index, name: index.copy_rows(name, name, ["a"], {}),
    "swap_alias to": lambda index, name: index.swap_alias(name),
    "drop": lambda index, name: index.drop(name),
}


@case(
    {
        **dict.fromkeys(["search", "count", "stamp_of", "upsert", "delete", "hashes of ids", "records", "vector_of", "copy_rows from"], "CollectionMissing"),
        "hashes of every row": "CollectionMissing",
        "swap_alias to": "CollectionMissing",
        "drop": "ok",
        "loaded": False,
    }
)
def a_missing_collection(b: Backend) -> object:
    index = b.index
    name = f"{b.alias}_gone"
    index.new_collection(name)
    index.drop(name)  # it existed once: what a reader meets after a swap dropped it
    observed: dict[str, object] = {what: outcome(functools.partial(call, index, name)) for what, call in MISSING_CALLS.items()}
    observed["loaded"] = value_or_error(lambda: index.loaded(name))
    return observed


@case(["ok", None, "CollectionMissing"])
def dropping_the_aliased_collection(b: Backend) -> object:
    index, collection = b.filled()
    index.swap_alias(collection)
    return [outcome(lambda: index.drop(collection)), value_or_error(index.active_collection), outcome(lambda: index.search(collection, QUERY, 3))]


@case(["MilvusException(65535)", "DataNotMatchException(1)", "ok"])
def rows_that_do_not_fit_the_schema(b: Backend) -> object:
    index, collection = b.filled(ids=("a",))
    short = make_row("x", np.ones(3, np.float32), "mem://x", [], "h-x", source="/s")
    row = make_row("y", np.ones(4, np.float32), "mem://y", [], "h-y", source="/s")
    del row["source"]
    return [
        outcome(lambda: index.upsert(collection, [short])),
        outcome(lambda: index.upsert(collection, [row])),
        outcome(lambda: index.search(collection, QUERY, 1)),
    ]


@case("MilvusException(65535)")
def searching_with_a_vector_of_another_dimension(b: Backend) -> object:
    index, collection = b.filled(ids=("a",))
    return outcome(lambda: index.search(collection, np.ones(3, np.float32), 1))


@case({"create an alias that exists": "MilvusException(1602)", "alter a missing alias": "MilvusException(1600)", "drop a missing alias": "ok"})
def the_alias_calls_of_the_port(b: Backend) -> object:
    """What ``ImageIndex`` relies on but cannot trigger on its own: a lost race for the first alias raises (``ensure_active``)."""
    index = b.index
    first, second = (index.new_collection(f"{b.alias}_{n}") for n in ("first", "second"))
    index.swap_alias(first)
    port: MilvusPort = index._connect()
    return {
        "create an alias that exists": outcome(lambda: port.create_alias(second, b.alias, timeout=30)),
        "alter a missing alias": outcome(lambda: port.alter_alias(second, f"{b.alias}_nothing", timeout=30)),
        "drop a missing alias": outcome(lambda: port.drop_alias(f"{b.alias}_nothing", timeout=30)),
    }
