"""The test helpers of ``tests/support/probes.py`` that other tests lean on."""

from __future__ import annotations

from opentelemetry import trace

from tests.support.probes import memory_spans


def test_memory_spans_installs_one_exporter_and_starts_it_afresh() -> None:
    """Each call used to add an exporter to the global provider: they piled up, and every span went to all of them."""
    tracer = trace.get_tracer(__name__)
    first = memory_spans()
    with tracer.start_as_current_span("before"):
        pass
    assert [span.name for span in first.get_finished_spans()] == ["before"]
    second = memory_spans()
    with tracer.start_as_current_span("after"):
        pass
    assert second is first, "a second exporter on the global provider"
    assert [span.name for span in second.get_finished_spans()] == ["after"], "spans from before the call"
