"""Stage 3's late parts: partials of a window past its grace merge (handed out once, to be added to the
stored window) while the window is within ``late_seconds``; older ones are dropped as too late."""

from __future__ import annotations

from ingest import state
from topology.model import EdgeKey, EdgePartial, Granularity, Layer, Side
from topology.stages.final import FinalStage
from topology.stats import EdgeStats

T = 1_700_000_040
KEY = EdgeKey(Layer.TRACE, Granularity.APP, "web", "api")


def part(requests: int, w: int = T) -> EdgePartial:
    return EdgePartial(KEY, w, 60, Side.PAIR, EdgeStats(requests=requests, first_seen=w, last_seen=w))


def test_a_partial_past_the_grace_is_a_late_part_handed_out_once() -> None:
    f = FinalStage(grace_seconds=120, late_seconds=6 * 3600)
    f.add([part(3)])
    assert [w.stats.requests for w in f.flush(T + 60)] == [3]
    assert f.flush(T + 200) == [] and f.open_windows == []  # forgotten: what it held is stored
    f.add([part(2), part(4)])  # ten minutes late, then two hours late
    f.flush(T + 600)
    [late] = f.take_late()
    assert (late.key, late.window_start, late.stats.requests) == (KEY, T, 6)  # the late part alone
    assert f.take_late() == [] and f.flush(T + 700) == []
    f.add([part(5)])
    f.flush(T + 2 * 3600)
    assert [w.stats.requests for w in f.take_late()] == [5]
    assert (f.counters["late_merged"], f.counters["late_dropped"]) == (3, 0)


def test_windows_older_than_late_seconds_are_dropped_as_too_late() -> None:
    f = FinalStage(grace_seconds=120, late_seconds=3600)
    f.flush(T + 3600)
    f.add([part(1)])  # the window starts exactly late_seconds before the watermark: gone from the store
    f.add([part(1, w=T + 60)])
    assert f.flush(T + 3600) == []
    assert [w.window_start for w in f.take_late()] == [T + 60]
    assert (f.counters["late_dropped"], f.counters["late_merged"]) == (1, 1)


def test_merging_off_drops_as_before() -> None:
    f = FinalStage(grace_seconds=120)
    f.flush(T + 500)
    f.add([part(1)])
    assert f.flush(T + 600) == [] and f.take_late() == []
    assert f.counters["late_dropped"] == 1


def test_late_parts_not_taken_survive_a_checkpoint() -> None:
    f = FinalStage(grace_seconds=120, late_seconds=3600)
    f.flush(T + 500)
    f.add([part(7)])
    back = state.loads(state.dumps(f))
    assert isinstance(back, FinalStage) and back.late_seconds == 3600
    assert [w.stats.requests for w in back.take_late()] == [7]


def test_windows_ending_before_the_floor_are_only_merged() -> None:
    """A stage started over a store that may hold windows (a restart): data of windows ending at or
    before the floor merges, even within what would be their grace; later windows go on as usual."""
    f = FinalStage(grace_seconds=120, late_seconds=3600)
    f.floor = T + 60
    f.add([part(2), part(3, w=T + 60)])
    assert [(w.window_start, w.stats.requests) for w in f.flush(T + 121)] == [(T + 60, 3)]
    assert [(w.window_start, w.stats.requests) for w in f.take_late()] == [(T, 2)]
    assert f.counters["late_merged"] == 1
