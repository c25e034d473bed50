"""Stage 3: side merging, lateness and grace, window alignment and edge health (any layer)."""

from __future__ import annotations

import pytest

from ingest import state
from topology.catalog import HealthEvent, HealthState
from topology.health import HealthBook
from topology.model import EdgeKey, EdgePartial, EdgeWindow, Granularity, Layer, NodeKind, Side
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
    with pytest.raises(ValueError):
        FinalStage(refresh_seconds=-1)


# -- provisional windows (the rules the in-process pipeline and the Kafka stage-3 worker share) ---------
OTHER = EdgeKey(Layer.IPC, Granularity.APP, "web", "db")


def _emitted(windows: list[EdgeWindow]) -> list[tuple[str, int, int]]:
    return sorted((w.key.target, w.window_start, w.stats.requests) for w in windows)


def test_a_new_edge_is_emitted_provisionally_and_a_known_one_only_when_its_window_closes() -> None:
    f = FinalStage()
    f.add([part(requests=1)])  # "api" in the first window
    assert _emitted(f.flush(T + 60)) == [("api", T, 1)]
    f.add([part(w=T + 60, requests=2), part(w=T + 60, key=OTHER, requests=3)])
    assert _emitted(f.flush(T + 70, provisional=True)) == [("db", T + 60, 3)]  # new; "api" is known
    assert f.flush(T + 71, provisional=True) == []  # nothing changed
    # "db" closes as it was emitted: the stored version stands (not emitted again)
    assert _emitted(f.flush(T + 120, provisional=True)) == [("api", T + 60, 2)]
    assert f.counters["provisional_emitted"] == 1 and f.counters["windows_emitted"] == 2
    assert f.counters["unchanged"] == 1


def test_a_provisional_window_that_changed_is_emitted_when_it_closes() -> None:
    f = FinalStage()
    f.add([part(key=OTHER, requests=3)])
    assert _emitted(f.flush(T + 10, provisional=True)) == [("db", T, 3)]
    f.add([part(key=OTHER, requests=1)])
    assert _emitted(f.flush(T + 60, provisional=True)) == [("db", T, 4)]
    assert f.counters["unchanged"] == 0


def test_a_provisional_window_whose_health_changed_is_emitted_when_it_closes() -> None:
    book = HealthBook()
    f = FinalStage(health=book)
    f.add([part(key=OTHER, requests=3)])
    [early] = f.flush(T + 10, provisional=True)
    assert early.stats.health == "HEALTHY"
    book.add(HealthEvent("db", HealthState.UNHEALTHY, T + 20))
    [closed] = f.flush(T + 60, provisional=True)
    assert (closed.stats.requests, closed.stats.health) == (3, "DEGRADED")


def test_later_versions_of_a_provisional_window_wait_for_the_refresh_interval() -> None:
    f = FinalStage(refresh_seconds=30)
    f.add([part(requests=1)])
    assert _emitted(f.flush(T + 1, provisional=True)) == [("api", T, 1)]
    f.add([part(requests=1)])
    assert _emitted(f.flush(T + 2, provisional=True)) == [("api", T, 2)]  # first release of held versions
    f.add([part(requests=1)])
    assert f.flush(T + 10, provisional=True) == []  # held: released at T + 32 at the earliest
    f.add([part(requests=1)])
    assert f.flush(T + 31, provisional=True) == []
    assert _emitted(f.flush(T + 32, provisional=True)) == [("api", T, 4)]  # the newest version only
    f.add([part(requests=1)])
    assert f.flush(T + 40, provisional=True) == []
    # the window closes: its complete version goes out and the held one is dropped, never emitted
    assert _emitted(f.flush(T + 60, provisional=True)) == [("api", T, 5)]
    assert f.flush(T + 100, provisional=True) == []


def test_an_edge_stays_new_until_a_window_has_emitted_it() -> None:
    """Known means emitted in the window before; an edge missing from it is new again."""
    f = FinalStage()
    f.add([part(requests=1)])
    assert _emitted(f.flush(T + 60)) == [("api", T, 1)]
    f.add([part(w=T + 120, requests=7)])  # nothing in T + 60: new again two windows later
    assert _emitted(f.flush(T + 121, provisional=True)) == [("api", T + 120, 7)]


def test_provisional_windows_end_in_the_same_complete_windows() -> None:
    def run(provisional: bool) -> dict[tuple[str, int], int]:
        f = FinalStage(refresh_seconds=5)
        last: dict[tuple[str, int], int] = {}
        for i in range(0, 400, 3):
            f.add([part(w=T + (i // 60) * 60, requests=1 + i % 4),
                   part(Side.SERVER, w=T + (i // 60) * 60, key=OTHER, requests=i % 5)])
            for w in f.flush(T + i - 0.5, provisional=provisional):
                last[(w.key.target, w.window_start)] = w.stats.requests  # the store's replace-on-upsert
        return last

    assert run(provisional=True) == run(provisional=False)
    assert len(run(provisional=False)) == 12  # 6 closed windows of 2 edges


def test_a_restored_stage_keeps_its_provisional_bookkeeping() -> None:
    f = FinalStage(refresh_seconds=7)
    f.add([part(requests=1)])
    assert len(f.flush(T + 1, provisional=True)) == 1
    f.add([part(requests=1)])
    f.flush(T + 2, provisional=True)
    f.add([part(requests=1)])
    assert f.flush(T + 3, provisional=True) == []  # held back until T + 9
    again = state.loads(state.dumps(f))
    assert again.refresh_seconds == 7
    assert again.flush(T + 8, provisional=True) == []
    assert _emitted(again.flush(T + 9, provisional=True)) == [("api", T, 3)]
    assert again.flush(T + 60) == []  # closed as released: that version stands


def test_a_restored_stage_emits_a_closing_window_it_emitted_before_the_checkpoint() -> None:
    f = FinalStage()
    f.add([part(requests=1)])
    assert len(f.flush(T + 1, provisional=True)) == 1
    again = state.loads(state.dumps(f))  # what was emitted last is not in the checkpoint
    assert _emitted(again.flush(T + 60)) == [("api", T, 1)]
    assert _emitted(f.flush(T + 60)) == []
