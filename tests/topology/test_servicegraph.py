"""topology.servicegraph: the calls of TRACE windows counted once, as stage 3 emits them (a provisional
version counts what it holds), a re-emitted window adding only what grew, histograms filled from the
latency sketch, bounded series."""

from __future__ import annotations

from bisect import bisect_left

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topology.model import EdgeKey, EdgePartial, Granularity, Layer, NodeKind, Side
from topology.servicegraph import DEFAULT_BUCKETS, OTHER, Series, ServiceGraph
from topology.sketch import LatencySketch
from topology.stages.final import FinalStage
from topology.stats import EdgeStats

T = 1_800_000_000  # a window start (a multiple of 60)


def partial(source: str, target: str, requests: int, errors: int = 0, durations: tuple[float, ...] = (),
            w: int = T, layer: Layer = Layer.TRACE, gran: Granularity = Granularity.APP,
            connection_type: str | None = None) -> EdgePartial:
    stats = EdgeStats(requests=requests, errors=errors, latency=LatencySketch.of(durations),
                      latency_sum=sum(durations), connection_type=connection_type)
    return EdgePartial(EdgeKey(layer, gran, source, target), w, 60, Side.PAIR, stats, NodeKind.SERVICE,
                       NodeKind.SERVICE)


def by_labels(graph: ServiceGraph) -> dict[tuple[str, str, str], Series]:
    return {s.labels: s for s in graph.series()}


def exact_buckets(durations: list[float]) -> list[int]:
    """Each duration in the first ``le`` bound at or above it (+Inf last): what Tempo would count."""
    out = [0] * (len(DEFAULT_BUCKETS) + 1)
    for d in durations:
        out[next((i for i, b in enumerate(DEFAULT_BUCKETS) if d <= b), len(DEFAULT_BUCKETS))] += 1
    return out


def test_a_provisional_version_counts_and_later_versions_add_what_grew() -> None:
    stage, graph = FinalStage(60, 120), ServiceGraph()
    stage.add([partial("web", "api", 10, 1, (0.003,) * 10)])
    provisional = stage.flush(T + 30, provisional=True)  # the window is open: a provisional version
    assert provisional and graph.observe(provisional, T + 30) == 1
    s = by_labels(graph)[("web", "api", "")]
    assert (s.requests, s.failed, sum(s.buckets)) == (10, 1, 10)
    assert stage.flush(T + 61, provisional=True) == []  # closed as it was emitted: counted already
    assert by_labels(graph)[("web", "api", "")].requests == 10
    stage.add([partial("web", "api", 5, 2, (0.03,) * 5)])  # late, within the grace period
    complete = stage.flush(T + 62)
    assert graph.observe(complete, T + 62) == 1
    s = by_labels(graph)[("web", "api", "")]
    assert (s.requests, s.failed, sum(s.buckets)) == (15, 3, 15)
    stage.add([partial("web", "api", 4, 0, (0.3,) * 4)])  # late, within the grace period: re-emitted
    again = stage.flush(T + 90)
    assert [w.stats.requests for w in again] == [19]  # the whole window again
    graph.observe(again, T + 90)
    s = by_labels(graph)[("web", "api", "")]
    assert (s.requests, s.failed) == (19, 3)
    assert list(s.buckets) == exact_buckets([0.003] * 10 + [0.03] * 5 + [0.3] * 4)
    assert s.seconds == pytest.approx(10 * 0.003 + 5 * 0.03 + 4 * 0.3)
    assert graph.observe(again, T + 95) == 0  # the same window replayed (a restart): nothing more
    assert by_labels(graph)[("web", "api", "")].requests == 19
    assert graph.counters == {"windows": 3, "recounted": 3, "folded": 0}


def test_other_layers_and_cluster_windows_are_not_counted() -> None:
    stage, graph = FinalStage(60, 120), ServiceGraph()
    stage.add([partial("web", "api", 3), partial("web-prod", "api-prod", 3, gran=Granularity.CLUSTER),
               partial("web", "api", 7, layer=Layer.IPC)])
    graph.observe(stage.flush(T + 60), T + 60)
    assert [(s.labels, s.requests) for s in graph.series()] == [(("web", "api", ""), 3)]


def test_windows_of_each_source_are_remembered_apart_and_forgotten_after_retention() -> None:
    graph = ServiceGraph(retain_seconds=120)
    stage = FinalStage(60, 120)
    stage.add([partial("web", "api", 2)])
    windows = stage.flush(T + 60)
    graph.observe(windows, T + 60, "p0")
    graph.observe(windows, T + 60, "p1")  # another partition's window of the same name: its own calls
    assert by_labels(graph)[("web", "api", "")].requests == 4
    assert graph.remembered() == 2
    graph.observe([], T + 60 + 120, "p0")  # p0's clock passed the window's end + retention
    assert graph.remembered() == 1


def test_connection_types_are_tempos() -> None:
    stage, graph = FinalStage(60, 120), ServiceGraph()
    stage.add([partial("api", "postgres", 4, connection_type="database"),
               partial("user", "web", 2, connection_type="virtual_node"),
               partial("orders", "billing", 1, connection_type="messaging_system")])
    graph.observe(stage.flush(T + 60), T + 60)
    assert set(by_labels(graph)) == {("api", "postgres", "database"), ("user", "web", "virtual_node"),
                                     ("orders", "billing", "messaging_system")}


def test_pairs_beyond_the_cap_are_folded_into_other_and_counted() -> None:
    stage, graph = FinalStage(60, 120), ServiceGraph(max_edges=2)
    stage.add([partial("a", "b", 1), partial("a", "c", 2), partial("a", "d", 4),
               partial("a", "e", 8, connection_type="database")])
    graph.observe(stage.flush(T + 60), T + 60)
    got = {s.labels: s.requests for s in graph.series()}
    # the first two pairs to come keep series; the later ones are folded, their connection type kept
    assert got == {("a", "b", ""): 1, ("a", "c", ""): 2, (OTHER, OTHER, ""): 4, (OTHER, OTHER, "database"): 8}
    assert graph.counters["folded"] == 2
    stage.add([partial("a", "b", 1, w=T + 60), partial("a", "z", 1, w=T + 60)])
    graph.observe(stage.flush(T + 120), T + 120)
    assert graph.counters["folded"] == 3  # a known pair keeps its series, a new one is folded


def test_histogram_buckets_follow_the_sketch_within_its_error() -> None:
    # durations at least 2% away from every bound land in the bucket an exact histogram gives them
    durations = [0.0015, 0.0029, 0.0052, 0.0071, 0.0098 * 0.97, 0.02, 0.07, 0.15, 0.33, 0.61, 0.9, 1.2,
                 1.7, 3.0, 7.0, 12.0, 40.0, 0.0]
    stage, graph = FinalStage(60, 120), ServiceGraph()
    stage.add([partial("web", "api", len(durations), 0, tuple(durations))])
    graph.observe(stage.flush(T + 60), T + 60)
    s = by_labels(graph)[("web", "api", "")]
    assert list(s.buckets) == exact_buckets(durations)
    assert s.seconds == pytest.approx(sum(durations))


def test_bad_settings_are_refused() -> None:
    for kwargs in ({"buckets": ()}, {"buckets": (0.2, 0.1)}, {"buckets": (0.0, 1.0)}, {"max_edges": 0}):
        with pytest.raises(ValueError):
            ServiceGraph(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 100.0), max_size=60), st.sampled_from([3, 5, 8]))
def test_histogram_buckets_are_those_the_sketch_values_fall_in(durations: list[float], scale: int) -> None:
    sketch = LatencySketch.of(durations)
    if scale != sketch.scale:  # the same durations at another scale (a client's histogram)
        sketch = LatencySketch(scale, sketch.offset, sketch.counts, sketch.zero)
    graph = ServiceGraph()
    stage = FinalStage(60, 120)
    stage.add([EdgePartial(EdgeKey(Layer.TRACE, Granularity.APP, "web", "api"), T, 60, Side.PAIR,
                           EdgeStats(requests=len(durations) or 1, latency=sketch), NodeKind.SERVICE,
                           NodeKind.SERVICE)])
    graph.observe(stage.flush(T + 60), T + 60)
    graph.observe(stage.flush(T + 60), T + 60)  # the same window again: the cached bucket bounds
    want = [0] * (len(DEFAULT_BUCKETS) + 1)
    for value, n in sketch.values():
        want[bisect_left(DEFAULT_BUCKETS, value)] += n
    assert list(graph.series()[0].buckets) == want
