"""Stage 3: side merging, lateness and grace, window alignment and edge health (any layer)."""

from __future__ import annotations

import pytest

from topology.catalog import HealthEvent, HealthState
from topology.health import HealthBook
from topology.model import EdgeKey, EdgePartial, Granularity, Layer, NodeKind, Side
from topology.stages.final import FinalStage
from topology.stats import EdgeStats

T = 1_700_000_040
KEY = EdgeKey(Layer.IPC, Granularity.APP, "web", "api")


def part(side: Side = Side.CLIENT, *, w: int = T, ws: int = 60, key: EdgeKey = KEY,
         **stats: object) -> EdgePartial:
    return EdgePartial(key, w, ws, side, EdgeStats(**stats))  # type: ignore[arg-type]


def test_sum_within_a_side_and_max_across_sides() -> None:
    f = FinalStage()
    f.add([part(Side.CLIENT, requests=10, errors=0), part(Side.CLIENT, requests=5),
           part(Side.SERVER, requests=14), part(Side.PAIR, requests=3), part(Side.PAIR, requests=4)])
    [w] = f.flush(T + 60)
    assert w.stats.requests == 15  # max(10 + 5, 14, 3 + 4)
    assert (w.window_start, w.window_seconds, w.key) == (T, 60, KEY)


def test_nothing_is_emitted_before_the_window_ends() -> None:
    f = FinalStage()
    f.add([part(requests=1)])
    assert f.flush(T + 59.9) == []
    assert len(f.flush(T + 60)) == 1
    assert f.flush(T + 61) == []  # emitted once; nothing changed


def test_late_partials_re_emit_the_complete_window_then_grace_drops_them() -> None:
    f = FinalStage(grace_seconds=120)
    f.add([part(requests=1)])
    assert [w.stats.requests for w in f.flush(T + 60)] == [1]
    f.add([part(requests=2)])
    assert [w.stats.requests for w in f.flush(T + 100)] == [3]  # the whole window again, not the delta
    f.add([part(requests=4)])
    assert [w.stats.requests for w in f.flush(T + 179)] == [7]
    assert f.flush(T + 180) == []  # the grace is over: the window is forgotten
    f.add([part(requests=8)])
    assert f.flush(T + 500) == []
    assert f.counters["late_dropped"] == 1 and f.counters["re_emitted"] == 2
    assert f.counters["late_accepted"] == 2 and f.open_windows == []


def test_finer_partials_fall_into_their_window_and_bad_windows_are_counted() -> None:
    f = FinalStage()
    f.add([part(w=T + 10, ws=10, requests=1), part(w=T + 50, ws=10, requests=2),
           part(w=T + 60, ws=10, requests=4),
           part(w=T, ws=120, requests=99), part(w=T + 5, ws=10, requests=99), part(w=T, ws=7, requests=99)])
    assert [(w.window_start, w.stats.requests) for w in f.flush(T + 120)] == [(T, 3), (T + 60, 4)]
    assert f.counters["bad_window"] == 3


@pytest.mark.parametrize(("requests", "errors", "health"), [
    (1000, 0, "HEALTHY"), (1000, 9, "HEALTHY"), (1000, 10, "DEGRADED"), (1000, 49, "DEGRADED"),
    (1000, 50, "UNHEALTHY"), (0, 0, "UNKNOWN"),
])
def test_health_from_the_error_rate(requests: int, errors: int, health: str) -> None:
    f = FinalStage()
    f.add([part(requests=requests, errors=errors)])
    [w] = f.flush(T + 60)
    assert w.stats.health == health


def test_an_unhealthy_target_makes_the_edge_at_least_degraded() -> None:
    book = HealthBook([
        HealthEvent("api", HealthState.HEALTHY, T - 600),
        HealthEvent("api", HealthState.UNHEALTHY, T + 70),  # during the second window only
        HealthEvent("api", HealthState.HEALTHY, T + 80),
    ])
    f = FinalStage(health=book)
    cluster_key = EdgeKey(Layer.NETWORK, Granularity.CLUSTER, "web-v1", "api-v7")
    f.add([part(requests=100), part(w=T + 60, requests=100), part(w=T + 60, requests=100, errors=10),
           EdgePartial(cluster_key, T + 60, 60, Side.CLIENT, EdgeStats(connections=1), NodeKind.SERVICE,
                       NodeKind.SERVICE, "web", "api")])
    got = {(w.key.granularity, w.window_start): w.stats.health for w in f.flush(T + 120)}
    assert got == {
        (Granularity.APP, T): "HEALTHY",
        (Granularity.APP, T + 60): "UNHEALTHY",  # 10 errors in 200 requests = 5%: worse than the floor
        (Granularity.CLUSTER, T + 60): "DEGRADED",  # network edge, target's app unhealthy in the window
    }


def test_health_carried_by_partials_is_kept_when_worse() -> None:
    f = FinalStage()
    f.add([part(requests=100, health="DEGRADED")])
    assert f.flush(T + 60)[0].stats.health == "DEGRADED"


def test_node_kinds_and_apps_are_kept() -> None:
    key = EdgeKey(Layer.TRACE, Granularity.CLUSTER, "web-v1", "orders-db")
    f = FinalStage()
    f.add([EdgePartial(key, T, 60, Side.PAIR, EdgeStats(requests=1), NodeKind.SERVICE, NodeKind.DATABASE,
                       None, None),
           EdgePartial(key, T, 60, Side.CLIENT, EdgeStats(requests=1), NodeKind.SERVICE, NodeKind.DATABASE,
                       "web", None)])
    [w] = f.flush(T + 60)
    assert (w.source_kind, w.target_kind, w.source_app, w.target_app) == (
        NodeKind.SERVICE, NodeKind.DATABASE, "web", None)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        FinalStage(window_seconds=0)
    with pytest.raises(ValueError):
        FinalStage(grace_seconds=-1)
