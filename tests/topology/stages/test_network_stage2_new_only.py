"""NETWORK stage 2, ``flush(early=True, new_only=True)`` (the Kafka worker's early flush): only edges new
in their open window go out early, and early + closing partials sum to what the same flushes emit
without early output.

The reference flushes at the same watermarks, not once at the end: a window closed before its records
all came is a matter of lateness, not of early output (a late backend of a load balancer whose clients
already fell back to ``client -> lb`` adds the joined edge and is counted, see
``test_a_backend_arriving_after_the_fallback_adds_the_direct_edge_and_is_counted``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.topology.stages.test_network_stage2 import T, agg, stage, summed
from topology.stages.network import FlowAggregate
from topology.wire.flow import ROLE_CLIENT, ROLE_SERVER

_AGG = st.tuples(st.sampled_from(["web", "mobile"]),
                 st.sampled_from(["10.0.1.1", "10.0.1.2", "10.0.9.1", "10.0.8.1", "10.0.1.3"]),
                 st.sampled_from([ROLE_CLIENT, ROLE_SERVER]), st.integers(0, 179), st.integers(1, 20),
                 st.integers(0, 10**6))


def _aggs(draws: list[tuple[str, str, int, int, int, int]]) -> list[FlowAggregate]:
    return [agg(app, remote, role, cluster=f"{app}-v1", start=start, conns=conns, sent=sent)
            for app, remote, role, start, conns, sent in draws]


@settings(max_examples=150, deadline=None)
@given(st.lists(_AGG, min_size=1, max_size=30), st.lists(st.integers(0, 240), max_size=6))
def test_early_new_edges_and_the_close_sum_like_the_same_flushes_without_them(
        draws: list[tuple[str, str, int, int, int, int]], flushes: list[int]) -> None:
    aggs = sorted(_aggs(draws), key=lambda a: a.first_start_ms)
    plain, early = stage(), stage()
    want, got = [], []
    for i, a in enumerate(aggs):
        plain.add([a])
        early.add([a])
        for f in flushes:
            if f <= i * 8:  # event time only moves forward
                want.extend(plain.flush(T + f - 5))
                got.extend(early.flush(T + f - 5, early=True, new_only=True))
    want.extend(plain.flush(T + 10**6))
    got.extend(early.flush(T + 10**6))
    assert summed(got) == summed(want)


def test_early_output_of_the_lateness_example_sums_like_flushes_without_it() -> None:
    """The example that once failed the property above: the window closes (at an early flush) before a
    load balancer's client and backend records come; the client falls back, the backend is late."""
    draws = [("web", "10.0.1.1", ROLE_CLIENT, 0, 1, 0)] * 28 + [
        ("web", "10.0.9.1", ROLE_CLIENT, 0, 1, 0), ("web", "10.0.9.1", ROLE_SERVER, 0, 1, 0)]
    prop = test_early_new_edges_and_the_close_sum_like_the_same_flushes_without_them
    prop.hypothesis.inner_test(draws, [65])


def test_only_new_edges_go_out_early() -> None:
    s = stage()
    s.add([agg("web", "10.0.1.1", cluster="web-v1", start=5, conns=2)])
    first = s.flush(T + 6, early=True, new_only=True)
    assert {(p.key.source, p.key.target, p.stats.connections) for p in first} == {
        ("web", "api", 2), ("web-v1", "api-v1", 2)}
    # more of the same edge in the same window: held until the close
    s.add([agg("web", "10.0.1.1", cluster="web-v1", start=15, conns=3)])
    assert s.flush(T + 16, early=True, new_only=True) == []
    closing = s.flush(T + 60, early=True, new_only=True)
    assert {(p.key.source, p.stats.connections) for p in closing} == {("web", 3), ("web-v1", 3)}
    # the next window: the edge was emitted in the window before, so it waits for the close
    s.add([agg("web", "10.0.1.1", cluster="web-v1", start=65, conns=4)])
    assert s.flush(T + 70, early=True, new_only=True) == []
    # an edge emitted early in the window before (still open) is not new either
    s.add([agg("mobile", "10.0.1.1", cluster="mobile-v1", start=125, conns=1)])
    s.add([agg("mobile", "10.0.1.1", cluster="mobile-v1", start=185, conns=1)])
    out = s.flush(T + 126, early=True, new_only=True)  # also closes [T+60, T+120)
    assert {(p.key.source, p.window_start) for p in out} == {
        ("mobile", T + 120), ("mobile-v1", T + 120), ("web", T + 60), ("web-v1", T + 60)}
    assert s.flush(T + 181, early=True, new_only=True) == []  # emitted in the window before
