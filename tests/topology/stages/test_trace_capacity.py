"""Span pairing at capacity: spans whose wait passed expire (into their edges) before anything is
dropped; only then the oldest is dropped and counted. The capacity is sized from memory."""

from __future__ import annotations

from tests.topology.stages.otlp_builders import resource_spans, span, traces
from topology.stages.trace import MAX_CAPACITY, MIN_CAPACITY, SpanPairer, capacity_for


def db_call(n: int, start: float) -> bytes:
    """One CLIENT span of ``web`` to the database ``orders`` (no server side: a virtual node)."""
    sp = span(n, 1, kind="client", start=start, attributes={"db.namespace": "orders"})
    return traces(resource_spans("web", [sp])).SerializeToString()


def test_spans_past_their_wait_expire_into_edges_before_any_is_dropped() -> None:
    p = SpanPairer(wait_seconds=10, max_pending=2)
    p.add_serialized(db_call(1, 1000.0), 0.0)
    p.add_serialized(db_call(2, 1000.0), 1.0)
    p.add_serialized(db_call(3, 1000.0), 20.0)  # over capacity: the first two have waited long enough
    assert (p.counters["dropped"], p.counters["expired"], p.pending) == (0, 2, 1)
    assert p.oldest_arrival == 20.0
    [edge] = p.flush(40.0)
    assert (edge.key.target, edge.stats.requests, p.counters["dropped"]) == ("orders", 3, 0)


def test_a_burst_beyond_capacity_drops_the_oldest_and_counts_it() -> None:
    p = SpanPairer(wait_seconds=10, max_pending=2)
    for n in (1, 2, 3):
        p.add_serialized(db_call(n, 1000.0), 0.0)
    assert (p.counters["dropped"], p.pending, p.oldest_arrival) == (1, 2, 0.0)
    [edge] = p.flush(20.0)
    assert edge.stats.requests == 2


def test_capacity_from_memory() -> None:
    assert capacity_for(24 * 2**30) == 524_288  # 1/32 of 24 GiB at 1.5 KiB a span
    assert capacity_for(0) == MIN_CAPACITY and capacity_for(2**50) == MAX_CAPACITY
