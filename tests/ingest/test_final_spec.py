"""The stage-3 spec of each layer fed from lists: edge partials and trace summaries in (repartition
records with their upstream clocks), windows out by the pure stage's rules, written by persist()."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.final import FinalSpec
from ingest.topics import Topics
from tests.ingest.testing import Bus, TestingStage, last_windows
from topology.admit import reason_class
from topology.catalog import HealthEvent, HealthState, TraceSummary
from topology.model import EdgeKey, EdgePartial, EdgeWindow, Granularity, Layer, Side
from topology.servicegraph import ServiceGraph
from topology.stats import EdgeStats
from topology.store.base import Stores
from topology.timewindow import TimeRange

T = 1_800_000_000
TOPICS = Topics()



class Stage3:
    """FinalSpec of ``layer`` behind a bus with one input partition, fed by two upstream sources."""

    def __init__(self, layer: Layer, stores: Stores, lateness: float = 5.0,
                 service_graph: ServiceGraph | None = None) -> None:
        self.layer = layer
        self.bus = Bus(1)
        self.spec = FinalSpec(layer.value.lower(), TOPICS, stores, lateness=lateness,
                              service_graph=service_graph)
        self.topic = self.spec.inputs()[0]
        self.sources = [f"{t}:{p}" for t in self.spec.upstream_inputs() for p in range(1)]
        self.stage = TestingStage(self.spec, self.bus, wall=T)

    def send(self, items: list[dict[str, Any]], now: float) -> None:
        self.bus.produce_items(self.topic, items, self.sources[0], now)

    def tick(self, now: float, early: bool = False) -> None:
        self.bus.tick(self.topic, dict.fromkeys(self.sources, now))
        self.stage.poll(early).commit()


def partial(layer: Layer, source: str, target: str, side: Side, w: int = T, **stats: Any) -> dict[str, Any]:
    key = EdgeKey(layer, Granularity.APP, source, target)
    return EdgePartial(key, w, 60, side, EdgeStats(**stats)).to_dict()


@pytest.mark.parametrize("layer", list(Layer))
def test_partials_of_both_sides_become_one_window_per_edge(layer: Layer, stores: Stores) -> None:
    s3 = Stage3(layer, stores)
    s3.send([partial(layer, "web", "api", Side.CLIENT, requests=100, errors=2),
             partial(layer, "web", "api", Side.SERVER, requests=12)], T + 10)
    s3.send([partial(layer, "web", "api", Side.CLIENT, requests=3), partial(layer, "api", "db", Side.CLIENT,
                                                                             requests=5)], T + 30)
    s3.tick(T + 64)
    assert s3.stage.effects == []  # the minute closes at T + 60 + lateness
    s3.tick(T + 65)
    got = {(k[3], k[4]): (v.requests, v.errors, v.health) for k, v in last_windows(s3.stage.effects).items()}
    # one side's sum (100 + 3), the larger of the two sides; 2 errors in 103: DEGRADED
    assert got == {("web", "api"): (103, 2, "DEGRADED"), ("api", "db"): (5, 0, "HEALTHY")}
    assert all(k[0] == layer.value for k in last_windows(s3.stage.effects))


def test_trace_summaries_pass_through_to_the_store_records(stores: Stores) -> None:
    s3 = Stage3(Layer.TRACE, stores)
    summary = TraceSummary("ab" * 16, "web", "GET /", T + 1.0, 0.2, 2, False, ("api", "web"))
    s3.send([partial(Layer.TRACE, "web", "api", Side.PAIR, requests=1), {"trace_summary": summary.to_dict()}],
            T + 2)
    s3.tick(T + 3)
    assert s3.stage.effects == [summary]  # right away: a summary waits for no window


def test_target_health_events_from_the_global_topic_degrade_edges(stores: Stores) -> None:
    s3 = Stage3(Layer.IPC, stores)
    s3.bus.produce_json(TOPICS.health, [HealthEvent("api", HealthState.UNHEALTHY, T + 5),
                                        HealthEvent("api", HealthState.HEALTHY, T + 20)], lambda e: e.service,
                        (T + 30) * 1000)
    s3.bus.produce(TOPICS.health, b"{not json", b"api", (T + 30) * 1000)  # skipped
    s3.send([partial(Layer.IPC, "web", "api", Side.CLIENT, requests=100),
             partial(Layer.IPC, "web", "db", Side.CLIENT, requests=100)], T + 10)
    s3.tick(T + 70)
    got = {k[4]: v.health for k, v in last_windows(s3.stage.effects).items()}
    assert got == {"api": "DEGRADED", "db": "HEALTHY"}


def test_bad_partials_are_dead_lettered(stores: Stores) -> None:
    s3 = Stage3(Layer.NETWORK, stores)
    s3.send([{"layer": "NETWORK", "granularity": "APP"}], T + 1)
    s3.bus.produce(s3.topic, b"[1, 2]", headers=[("st.format", b"xml")], partition=0)
    s3.tick(T + 2)
    assert [reason_class(d["reason"]) for d in s3.stage.dead] == ["schema", "decode"]


def test_a_new_edge_is_written_early_and_later_versions_wait_for_the_refresh(stores: Stores) -> None:
    s3 = Stage3(Layer.IPC, stores)
    s3.spec.provisional_refresh = 20.0
    s3.send([partial(Layer.IPC, "web", "api", Side.CLIENT, requests=1)], T + 10)
    s3.tick(T + 15, early=True)
    s3.send([partial(Layer.IPC, "web", "api", Side.CLIENT, requests=1)], T + 20)
    s3.tick(T + 21, early=True)  # the second version of the new edge is released at once ...
    s3.send([partial(Layer.IPC, "web", "api", Side.CLIENT, requests=1)], T + 22)
    s3.tick(T + 30, early=True)  # ... the third only 20 s later
    s3.tick(T + 41, early=True)
    s3.tick(T + 65, early=True)  # closed as its last version: that one stands (not written again)
    versions = [(w.window_start, w.stats.requests) for w in s3.stage.effects if isinstance(w, EdgeWindow)]
    assert versions == [(T, 1), (T, 2), (T, 3)]
    counters = s3.stage.counters()
    assert (counters["provisional_emitted"], counters["windows_emitted"], counters["unchanged"]) == (3, 0, 1)


def test_the_trace_worker_counts_finalised_windows_in_its_service_graph(stores: Stores) -> None:
    """Each version (early flushes, the complete window) adds what grew since the last one counted; a
    late partial within the grace period adds only itself (topology.servicegraph)."""
    graph = ServiceGraph()
    s3 = Stage3(Layer.TRACE, stores, service_graph=graph)
    s3.send([partial(Layer.TRACE, "web", "api", Side.PAIR, requests=4, errors=1)], T + 10)
    s3.tick(T + 15, early=True)
    s3.send([partial(Layer.TRACE, "web", "api", Side.PAIR, requests=2)], T + 20)
    s3.tick(T + 40, early=True)
    assert [w.stats.requests for w in s3.stage.effects if isinstance(w, EdgeWindow)] == [4, 6]
    assert [(s.labels, s.requests, s.failed) for s in graph.series()] == [(("web", "api", ""), 6, 1)]
    s3.tick(T + 65, early=True)  # closed as its last version: not emitted again
    s3.send([partial(Layer.TRACE, "web", "api", Side.PAIR, requests=3, errors=2)], T + 70)  # late
    s3.tick(T + 75)
    s3.tick(T + 80)
    assert [w.stats.requests for w in s3.stage.effects if isinstance(w, EdgeWindow)] == [4, 6, 9]
    assert [(s.labels, s.requests, s.failed) for s in graph.series()] == [(("web", "api", ""), 9, 3)]
    ipc = ServiceGraph()
    s3 = Stage3(Layer.IPC, stores, service_graph=ipc)  # another layer's worker counts nothing
    s3.send([partial(Layer.IPC, "web", "api", Side.CLIENT, requests=4)], T + 10)
    s3.tick(T + 65)
    assert ipc.series() == []


async def test_write_persists_windows_nodes_and_traces(stores: Stores) -> None:
    s3 = Stage3(Layer.TRACE, stores)
    summary = TraceSummary("cd" * 16, "web", "GET /", T + 1.0, 0.2, 2, False, ("api", "web"))
    s3.send([partial(Layer.TRACE, "web", "api", Side.PAIR, requests=4), {"trace_summary": summary.to_dict()}],
            T + 2)
    s3.tick(T + 70)
    assert await s3.spec.write(s3.stage.effects) == 2
    assert await s3.spec.write(s3.stage.effects) == 2  # idempotent
    edges = await stores.layers[Layer.TRACE].edges(Granularity.APP, TimeRange(T, T + 60), T + 70)
    assert [(e.key.source, e.key.target, e.stats.requests) for e in edges] == [("web", "api", 4)]
    assert await stores.catalog.recent_traces("api", 5) == [summary]
    assert set(await stores.catalog.known_nodes(["web", "api"])) == {"web", "api"}
