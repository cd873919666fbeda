"""``python -m bench.gateway_parts``: the CPU of each piece of a SearchText that issue 23 cut, before and after, in one process and one run.

No server: each piece runs on the answer and the response of one SearchText (top_k 10, so 18 hits
fetched, 8 fields each; 10 hits with metadata returned), ``--calls`` times, with the old way and
the new way alternating ``--rounds`` times; the figure is the median CPU microseconds per call
(``time.process_time``). The old ways are kept here as they were:

- the Milvus answer: pymilvus's ``SearchResult`` (per-cell decoding) against ``core.milvus_search.decode``;
- the response: a list of ``pb.Hit`` messages copied into the ``SearchResponse`` against hits written in place;
- an empty filter: converted field by field against the shared ``SearchFilter()``;
- a child span and a downstream timer with no SDK provider: a no-op span opened against none.

Writes ``bench/results/<date>-<host>-gateway-parts.json`` and the table between the
``gateway-parts`` markers of ``docs/benchmarks.md`` (``--no-publish``: prints it only).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pymilvus.client.search_result import SearchResult as MilvusSearchResult
from pymilvus.grpc_gen import schema_pb2

from bench.report import ROOT, measured, publish, run_header
from core import milvus_search
from core.filters import SearchFilter
from core.metrics import DOWNSTREAM
from core.records import METADATA_FIELDS, Hit, ImageMetadata
from core.tracing import span, tracer
from gateway.metadata import to_conditions, to_message
from gateway.servicers import to_filter, to_response
from search.engine import SearchResult
from text2image.v1 import text2image_pb2 as pb

START, END = "<!-- gateway-parts:start -->", "<!-- gateway-parts:end -->"
FETCHED, RETURNED = 18, 10  # top_k 10 and search.pages' margin of 8


def milvus_answer() -> schema_pb2.SearchResultData:
    """What Milvus 2.3 answers a SearchText: 18 hits with uri, labels and the 6 metadata fields."""
    data = schema_pb2.SearchResultData(num_queries=1, top_k=FETCHED, topks=[FETCHED], primary_field_name="id")
    data.ids.str_id.data.extend(f"v{i}" for i in range(FETCHED))
    data.scores.extend(0.3 - i / 100 for i in range(FETCHED))
    uri = data.fields_data.add(field_name="uri", type=schema_pb2.VarChar)
    uri.scalars.string_data.data.extend(f"file:///images/{i}.jpg" for i in range(FETCHED))
    labels = data.fields_data.add(field_name="labels", type=schema_pb2.Array)
    labels.scalars.array_data.element_type = schema_pb2.VarChar
    for _ in range(FETCHED):
        labels.scalars.array_data.data.add().string_data.data.extend(["cat", "red"])
    for name in METADATA_FIELDS:
        column = data.fields_data.add(field_name=name, type=schema_pb2.VarChar if name == "format" else schema_pb2.Int64)
        (column.scalars.string_data.data if name == "format" else column.scalars.long_data.data).extend(
            ["JPEG"] * FETCHED if name == "format" else [640] * FETCHED
        )
    return data


def hits_of(rows: Any) -> list[Hit]:
    """``MilvusRows.search``'s hits from the rows of an answer."""
    return [
        Hit(str(r["id"]), r["entity"].get("uri", ""), float(r["distance"]), list(r["entity"].get("labels") or []), ImageMetadata.of_row(r["entity"]))
        for r in rows[0]
    ]


def old_response(result: SearchResult) -> pb.SearchResponse:
    """``to_response`` before: a list of ``Hit`` messages, copied into the response."""
    return pb.SearchResponse(
        hits=[pb.Hit(id=h.id, uri=h.uri, score=h.score, labels=h.labels, metadata=to_message(h.metadata)) for h in result.hits],
        model_id=result.model_id,
        took_ms=result.took_ms,
        query_truncated=result.truncated,
        query_tokens=result.query_tokens,
        collection=result.collection,
        cutoff=pb.CUTOFF_NONE,
        cutoff_score=result.cutoff_score,
        cutoff_dropped=result.cutoff_dropped,
        next_page_token=result.next_page_token,
    )


def old_filter(message: pb.Filter) -> SearchFilter:
    """``to_filter`` before: every part converted, an empty filter too."""
    labels = message.labels
    return SearchFilter(
        tuple(labels.all_of), tuple(labels.any_of), tuple(labels.none_of), tuple(message.ids), message.uri_prefix, to_conditions(message.metadata)
    )


@contextmanager
def old_downstream() -> Iterator[None]:
    """``core.metrics.downstream`` before: a no-op span opened even with no SDK provider."""
    start = time.perf_counter()
    with tracer.start_as_current_span("milvus search", attributes={"peer.service": "milvus"}):
        yield
    DOWNSTREAM.labels("milvus", "search", "ok").observe(time.perf_counter() - start)


@contextmanager
def new_downstream() -> Iterator[None]:
    """``core.metrics.downstream`` now (``core.tracing.span`` opens nothing without an SDK provider)."""
    start = time.perf_counter()
    with span("milvus search", **{"peer.service": "milvus"}):
        yield
    DOWNSTREAM.labels("milvus", "search", "ok").observe(time.perf_counter() - start)


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e6


def pieces() -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    """Each piece's (old, new) call, on one SearchText's data."""
    answer = milvus_answer()
    metadata = ImageMetadata(640, 480, 81_234, "JPEG", 1_700_000_000_000_000, None)
    result = SearchResult([Hit(f"v{i}", f"file:///images/{i}.jpg", 0.3, ["cat", "red"], metadata) for i in range(RETURNED)], "images_1", 1.0, "clip", 12)
    empty = pb.Filter()
    assert hits_of(milvus_search.decode(answer)) == hits_of(MilvusSearchResult(answer, -1))
    assert to_response(result) == old_response(result) and to_filter(empty) == old_filter(empty)

    def old_decode() -> object:
        return hits_of(MilvusSearchResult(answer, -1))

    def new_decode() -> object:
        return hits_of(milvus_search.decode(answer))

    def timed(block: Callable[[], Any]) -> Callable[[], object]:
        def run() -> object:
            with block():
                return None

        return run

    return {
        f"Milvus answer to hits ({FETCHED} hits x {2 + len(METADATA_FIELDS)} fields)": (old_decode, new_decode),
        f"SearchResponse of {RETURNED} hits with metadata": (lambda: old_response(result), lambda: to_response(result)),
        "empty Filter to SearchFilter": (lambda: old_filter(empty), lambda: to_filter(empty)),
        "one downstream call's span and timer, no SDK provider (3 a SearchText)": (timed(old_downstream), timed(new_downstream)),
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"{measured(report)}; median of {report['parameters']['rounds']} alternating rounds of {report['parameters']['calls']:,} calls each, "
        f"CPU microseconds per call, in one process. Raw data: `{report['path']}`.",
        "",
        "| piece of a SearchText | before µs | after µs | saved µs |",
        "| --- | --- | --- | --- |",
    ]
    for name, piece in report["pieces"].items():
        lines.append(f"| {name} | {piece['before_us']:.1f} | {piece['after_us']:.1f} | {piece['before_us'] - piece['after_us']:.1f} |")
    lines += ["", f"Saved per SearchText: about {report['saved_per_query_us']:.0f} µs of CPU (the span row three times: tokenize, Triton, Milvus)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-publish", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    report: dict[str, Any] = {**run_header(parameters={"calls": args.calls, "rounds": args.rounds}), "pieces": {}}
    runs: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.rounds):
        for name, (old, new) in pieces().items():
            runs.setdefault(name, {"before": [], "after": []})
            runs[name]["before"].append(per_call_us(old, args.calls))
            runs[name]["after"].append(per_call_us(new, args.calls))
    for name, values in runs.items():
        report["pieces"][name] = {"before_us": statistics.median(values["before"]), "after_us": statistics.median(values["after"]), "runs": values}
    report["saved_per_query_us"] = sum((p["before_us"] - p["after_us"]) * (3 if "span" in name else 1) for name, p in report["pieces"].items())
    if args.no_publish:
        report["path"] = "(not written)"
        print(render(report))
        return
    publish(report, Path(args.out), "-gateway-parts", START, END, render)


if __name__ == "__main__":
    main()
