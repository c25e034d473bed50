"""The one contract test suite every store implementation must pass.

Use it from a test module per implementation::

    class TestMyStore(StoreContract):
        @pytest.fixture
        async def stores_factory(self, tmp_path) -> AsyncIterator[StoresFactory]:
            factory = MyFactory(...)
            yield factory
            await factory.close()

The factory hands out *fresh* (empty) stores and, where the backend persists, reopens the last ones
(``supports_reopen``). All inputs are hand-built and every expected answer is written out here.

Behaviour pinned down by this suite beyond ``topology/store/base.py``'s docstring:

* ``traverse``: roots are not in ``reached``; ``reached`` is sorted by (depth, name); a node reached
  from several nodes of the previous level gets the smallest of their names as ``via``; ``edges``
  holds every present edge leaving a node of depth < ``depth`` (also edges back into visited nodes),
  each once, in no particular order. ``neighbors`` lists each edge once, in no particular order;
  ``edges`` returns edges sorted by (source, target).
* An edge's kinds are those of the last window written for it.
* One ``rollup(now)`` builds the hours *and* the days that are finished at ``now``.
* ``record_health`` keeps one event per (service, at); ``health`` answers with its time as ``since``.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.topology.blast import assert_kept_walk_is_level_walk
from topology.catalog import (
    AddressKind,
    AddressLease,
    HealthEvent,
    HealthState,
    Owner,
    ServiceInfo,
    TraceSpan,
    TraceSummary,
    pack_spans,
)
from topology.change import ChangeEvent, ChangeKind
from topology.diff import DiffDirection, diff
from topology.metric import CallMetrics, EdgeMetric
from topology.model import (
    Direction,
    EdgeKey,
    EdgePartial,
    EdgeSummary,
    EdgeWindow,
    Granularity,
    Layer,
    NodeInfo,
    NodeKind,
    Reached,
    Side,
)
from topology.peers import unknown_peers
from topology.sim.latency import LATENCY_SHAPES, latency_samples
from topology.sketch import LatencySketch
from topology.stages.final import FinalStage
from topology.stats import EdgeStats
from topology.store.base import ServiceFilter, Stores
from topology.tiers import tier_violations
from topology.timewindow import DAY, HOUR, MINUTE, Retention, TimeRange, align

T0 = 1_700_006_400  # a UTC midnight
APP, CLUSTER = Granularity.APP, Granularity.CLUSTER
UP, DOWN = Direction.UPSTREAM, Direction.DOWNSTREAM
NET, IPC, TRACE = Layer.NETWORK, Layer.IPC, Layer.TRACE

NASTY_NAMES = (
    "g.V().drop()",
    "'); drop table edges; --",
    'say "hi"',
    "naïve-服务-🚀",
    "back\\slash",
    "${jndi:x}%s%n",
    "a b\tc",
)


class StoresFactory(abc.ABC):
    """Hands out stores for one test."""

    supports_reopen: bool = False

    @abc.abstractmethod
    async def fresh(self, retention: Retention | None = None) -> Stores:
        """Empty stores (all layers and the catalog) with this retention (default: ``Retention()``)."""

    async def reopen(self) -> Stores:
        """Close the stores last handed out and open the same data again."""
        raise NotImplementedError

    @abc.abstractmethod
    async def close(self) -> None:
        """Close everything handed out (called once at the end of each test)."""


# -- hand-built inputs ------------------------------------------------------------------------------
def stats(start: int, seconds: int = MINUTE, **kw: Any) -> EdgeStats:
    kw.setdefault("requests", 10)
    kw.setdefault("connections", 1)
    return EdgeStats(first_seen=float(start), last_seen=float(start + seconds - 1), **kw)


def win(
    src: str,
    dst: str,
    start: int,
    *,
    layer: Layer = NET,
    gran: Granularity = APP,
    seconds: int = MINUTE,
    s: EdgeStats | None = None,
    source_kind: NodeKind = NodeKind.SERVICE,
    target_kind: NodeKind = NodeKind.SERVICE,
    **kw: Any,
) -> EdgeWindow:
    return EdgeWindow(
        EdgeKey(layer, gran, src, dst),
        start,
        seconds,
        s if s is not None else stats(start, seconds, **kw),
        source_kind=source_kind,
        target_kind=target_kind,
    )


def minutes(src: str, dst: str, first: int, count: int, *, step: int = 1, **kw: Any) -> list[EdgeWindow]:
    """``count`` minute windows from ``first`` (aligned), one every ``step`` minutes."""
    return [win(src, dst, first + i * step * MINUTE, **kw) for i in range(count)]


def pairs(edges: Sequence[EdgeSummary]) -> list[tuple[str, str]]:
    return [(e.key.source, e.key.target) for e in edges]


def npairs(edges: Sequence[EdgeSummary]) -> list[tuple[str, str]]:
    """``neighbors`` answers in no particular order, each edge once."""
    found = pairs(edges)
    assert len(found) == len(set(found)), f"an edge listed twice: {found}"
    return sorted(found)


def by_pair(edges: Sequence[EdgeSummary]) -> dict[tuple[str, str], EdgeStats]:
    return {(e.key.source, e.key.target): e.stats for e in edges}


def merged(windows: Sequence[EdgeWindow]) -> EdgeStats:
    out = windows[0].stats
    for w in windows[1:]:
        out = out.merge(w.stats)
    return out


LIVE_NOW = T0 + 2 * HOUR
LIVE = TimeRange(LIVE_NOW - 15 * MINUTE, LIVE_NOW)


# -- latency accuracy ----------------------------------------------------------------------------
QUANTILES = (0.5, 0.9, 0.99)
MAX_QUANTILE_ERROR = 0.02  # relative, against numpy.quantile of every observation


def latency_partials(
    src: str, dst: str, samples: npt.NDArray[np.float64], first: int, minutes: int, layer: Layer = IPC
) -> list[EdgePartial]:
    """Per minute: the minute's calls as two CLIENT reports (stage 3 adds them) and a SERVER report
    of a few of them (stage 3 keeps the side with more observations)."""
    out: list[EdgePartial] = []
    key = EdgeKey(layer, APP, src, dst)
    for m, part in enumerate(np.array_split(samples, minutes)):
        start = first + m * MINUTE
        values = part.tolist()
        half = len(values) // 2
        for side, chunk in ((Side.CLIENT, values[:half]), (Side.CLIENT, values[half:]),
                            (Side.SERVER, values[:10])):
            st = EdgeStats(float(start), float(start + 30), requests=len(chunk),
                           latency=LatencySketch.of(chunk), latency_sum=float(sum(chunk)))
            out.append(EdgePartial(key, start, MINUTE, side, st))
    return out


def assert_quantiles_close(got: EdgeStats, samples: npt.NDArray[np.float64], what: str) -> None:
    assert got.latency.total == len(samples), what
    for q in QUANTILES:
        want = float(np.quantile(samples, q))
        est = got.latency_quantile(q)
        assert est is not None and abs(est - want) <= MAX_QUANTILE_ERROR * want, (what, q, est, want)


def stage3_windows(partials: Sequence[EdgePartial], watermark: float) -> list[EdgeWindow]:
    stage = FinalStage()
    stage.add(partials)
    return stage.flush(watermark)

# The traversal graph (APP, NETWORK), every edge live:
#   x -> a;  a -> b, a -> c;  b -> d, c -> d (diamond);  d -> e;  e -> b (cycle);  e -> f (f is a database)
TRAVERSAL_EDGES = [
    ("x", "a"),
    ("a", "b"),
    ("a", "c"),
    ("b", "d"),
    ("c", "d"),
    ("d", "e"),
    ("e", "b"),
    ("e", "f"),
]


class StoreContract:
    """Subclass as ``Test<Impl>`` and provide the ``stores_factory`` fixture."""

    @pytest.fixture
    async def stores(self, stores_factory: StoresFactory) -> Stores:
        return await stores_factory.fresh()

    async def _traversal_graph(self, stores: Stores) -> None:
        ws = []
        for src, dst in TRAVERSAL_EDGES:
            kind = NodeKind.DATABASE if dst == "f" else NodeKind.SERVICE
            ws += minutes(src, dst, LIVE_NOW - 10 * MINUTE, 5, target_kind=kind)
        ws += minutes("d", "gone", T0, 5)  # stopped long before the live window
        await stores.layers[NET].upsert_windows(ws)

    # -- upsert, replace, stats ------------------------------------------------------------------------
    async def test_neighbors_in_both_directions(self, stores: Stores) -> None:
        net = stores.layers[NET]
        await net.upsert_windows(
            minutes("a", "b", LIVE_NOW - 5 * MINUTE, 3)
            + minutes("a", "c", LIVE_NOW - 5 * MINUTE, 1)
            + minutes("d", "a", LIVE_NOW - 3 * MINUTE, 2)
        )
        up = await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
        assert npairs(up) == [("a", "b"), ("a", "c")]
        assert by_pair(up)[("a", "b")].requests == 30
        down = await net.neighbors(["a"], DOWN, APP, LIVE, LIVE_NOW)
        assert npairs(down) == [("d", "a")]
        assert down[0].stats.requests == 20
        assert await net.neighbors(["b"], UP, APP, LIVE, LIVE_NOW) == []
        assert await net.neighbors(["nobody"], DOWN, APP, LIVE, LIVE_NOW) == []

    async def test_neighbors_of_several_names_lists_each_edge_once(self, stores: Stores) -> None:
        net = stores.layers[NET]
        await net.upsert_windows(
            minutes("a", "b", LIVE_NOW - 5 * MINUTE, 1) + minutes("b", "c", LIVE_NOW - 5 * MINUTE, 1)
        )
        up = await net.neighbors(["b", "a", "a"], UP, APP, LIVE, LIVE_NOW)
        assert npairs(up) == [("a", "b"), ("b", "c")]
        down = await net.neighbors(["b", "c"], DOWN, APP, LIVE, LIVE_NOW)
        assert npairs(down) == [("a", "b"), ("b", "c")]

    async def test_upsert_twice_changes_nothing(self, stores: Stores) -> None:
        net = stores.layers[NET]
        ws = minutes("a", "b", LIVE_NOW - 10 * MINUTE, 4, ports=(443,), bytes_sent=1000)
        await net.upsert_windows(ws)
        first = await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
        counts = await net.window_count()
        await net.upsert_windows(ws)
        await net.upsert_windows(list(reversed(ws)))
        assert await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW) == first
        assert await net.window_count() == counts
        assert counts.get(MINUTE) == 4
        assert first[0].stats.bytes_sent == 4000 and first[0].stats.requests == 40

    async def test_a_window_replaces_the_stored_one_with_the_same_key(self, stores: Stores) -> None:
        net = stores.layers[NET]
        start = LIVE_NOW - 5 * MINUTE
        await net.upsert_windows([win("a", "b", start, requests=5, ports=(80,))])
        await net.upsert_windows([win("a", "b", start, requests=7, ports=(443,))])
        [e] = await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
        assert e.stats.requests == 7 and e.stats.ports == (443,)
        assert (await net.window_count()).get(MINUTE) == 1

    async def test_merge_adds_a_late_part_to_the_stored_window(self, stores: Stores) -> None:
        """merge_windows adds (requests, ports, latency), stores a window it does not find, and leaves
        other windows alone; stored_stats answers only stored keys."""
        trace = stores.layers[TRACE]
        start = LIVE_NOW - 5 * MINUTE
        other = win("a", "c", start, layer=TRACE, requests=3)
        await trace.upsert_windows([win("a", "b", start, layer=TRACE, requests=5, errors=1,
                                        latency=LatencySketch.of([0.01] * 5)), other])
        await trace.merge_windows([
            win("a", "b", start, layer=TRACE, requests=7, latency=LatencySketch.of([0.2] * 7)),
            win("a", "b", start, layer=TRACE, requests=1, errors=1, latency=LatencySketch.of([0.2])),
            win("x", "y", start - MINUTE, layer=TRACE, requests=2, target_kind=NodeKind.DATABASE),
        ])
        got = await trace.stored_stats([(EdgeKey(TRACE, APP, "a", "b"), MINUTE, start),
                                        (EdgeKey(TRACE, APP, "x", "y"), MINUTE, start - MINUTE),
                                        (EdgeKey(TRACE, APP, "a", "b"), MINUTE, start - MINUTE),
                                        (EdgeKey(TRACE, APP, "nope", "b"), MINUTE, start)])
        ab = got[(EdgeKey(TRACE, APP, "a", "b"), MINUTE, start)]
        assert (ab.requests, ab.errors, ab.latency.total) == (13, 2, 13)
        assert got[(EdgeKey(TRACE, APP, "x", "y"), MINUTE, start - MINUTE)].requests == 2
        assert len(got) == 2
        [e] = await trace.neighbors(["x"], UP, APP, LIVE, LIVE_NOW)
        assert e.target_kind is NodeKind.DATABASE
        [c] = [e for e in await trace.neighbors(["a"], UP, APP, LIVE, LIVE_NOW) if e.key.target == "c"]
        assert c.stats.requests == 3
        assert (await trace.window_count()).get(MINUTE) == 3

    async def test_stats_are_the_merge_of_the_windows_overlapping_the_range(self, stores: Stores) -> None:
        ipc = stores.layers[IPC]
        base = LIVE_NOW - 10 * MINUTE
        ws = [
            win(
                "a",
                "b",
                base,
                layer=IPC,
                requests=10,
                errors=1,
                latency=LatencySketch.of([0.002, 0.1]),
                latency_sum=0.102,
                endpoints=("GET /x",),
                protocol="http",
            ),
            win(
                "a",
                "b",
                base + MINUTE,
                layer=IPC,
                requests=20,
                errors=0,
                latency=LatencySketch.of([0.5]),
                latency_sum=0.5,
                endpoints=("GET /y",),
            ),
            win("a", "b", base + 2 * MINUTE, layer=IPC, requests=40, errors=4, endpoints=("POST /z",)),
        ]
        await ipc.upsert_windows(ws)
        # [base + 30 s, base + 90 s) overlaps the first two windows only
        [e] = await ipc.neighbors(["a"], UP, APP, TimeRange(base + 30, base + 90), LIVE_NOW)
        want = ws[0].stats.merge(ws[1].stats)
        assert e.stats == want
        assert e.stats.requests == 30 and e.stats.errors == 1 and e.stats.endpoints == ("GET /x", "GET /y")
        assert e.stats.latency.total == 3
        assert e.stats.first_seen == base and e.stats.last_seen == base + MINUTE + 59
        assert e.stats.protocol == "http"
        [all3] = await ipc.neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
        assert all3.stats == merged(ws)
        # a range ending exactly where a window starts does not include it (half-open)
        [only0] = await ipc.neighbors(["a"], UP, APP, TimeRange(base - 60, base + MINUTE), LIVE_NOW)
        assert only0.stats == ws[0].stats

    async def test_call_metrics_are_the_neighbors_stats_reduced(self, stores: Stores) -> None:
        ipc = stores.layers[IPC]
        start = LIVE_NOW - HOUR  # an hour of minutes: the older ones lie beyond any in-memory ring
        rng = random.Random(5)
        ws: list[EdgeWindow] = []
        for m in range(60):
            for dst in ("b", "c", "db"):
                if rng.random() < 0.2:
                    continue
                xs = [rng.lognormvariate(-4, 1) for _ in range(rng.randrange(1, 40))] + [0.0] * (m % 3 == 0)
                ws.append(win("a", dst, start + m * MINUTE, layer=IPC, requests=len(xs),
                              errors=rng.randrange(3), latency=LatencySketch.of(xs)))
        ws.append(win("x", "a", start, layer=IPC, requests=5, errors=5))  # latency not measured
        await ipc.upsert_windows(ws)
        old, recent = TimeRange(start, start + 40 * MINUTE), TimeRange(LIVE_NOW - 10 * MINUTE, LIVE_NOW)
        for time in (old, recent, LIVE, TimeRange(start, LIVE_NOW)):
            for names, direction in ((["a", "nobody"], UP), (["a"], DOWN)):
                answer = await ipc.neighbors(names, direction, APP, time, LIVE_NOW)
                got = await ipc.call_metrics(names, direction, APP, time, LIVE_NOW)
                assert len(got) == len(answer)
                assert dict(got) == {s.key: CallMetrics.of(s.stats) for s in answer}
        # written out by hand for one edge and range: sums, and the quantiles of the merged sketch
        inside = [w for w in ws if w.key.target == "b" and old.start <= w.window_start < old.end]
        ab = EdgeKey(IPC, APP, "a", "b")
        want = merged(inside)
        metrics = dict(await ipc.call_metrics(["a"], UP, APP, old, LIVE_NOW))
        assert metrics[ab] == CallMetrics(want.requests, want.errors, want.latency.quantile(0.5),
                                          want.latency.quantile(0.99))
        assert want.requests == sum(w.stats.requests for w in inside)
        assert dict(await ipc.call_metrics(["a"], DOWN, APP, old, LIVE_NOW)) == {
            EdgeKey(IPC, APP, "x", "a"): CallMetrics(5, 5, None, None)}
        # a late window inside the range is seen at once (nothing stale is remembered)
        late = [w for w in ws if w.key.target == "b"][3]
        await ipc.upsert_windows([win("a", "b", late.window_start, layer=IPC, requests=1000, errors=900,
                                      latency=LatencySketch.of([9.0]))])
        again = dict(await ipc.call_metrics(["a"], UP, APP, old, LIVE_NOW))[ab]
        assert again.requests == metrics[ab].requests - late.stats.requests + 1000
        assert again.errors == metrics[ab].errors - late.stats.errors + 900

    async def test_latency_quantiles_stay_within_2_percent_through_stage3_store_and_rollup(
        self, stores_factory: StoresFactory
    ) -> None:
        stores = await stores_factory.fresh(Retention(minute=2 * HOUR, hour=2 * DAY, day=30 * DAY))
        ipc = stores.layers[IPC]
        per_minute = 150
        samples = {shape: latency_samples(shape, 60 * per_minute) for shape in LATENCY_SHAPES}
        partials = [p for shape, xs in samples.items() for p in latency_partials("a", shape, xs, T0, 60)]
        windows = stage3_windows(partials, T0 + HOUR)
        assert len(windows) == 60 * len(LATENCY_SHAPES)
        await ipc.upsert_windows(windows)
        now = T0 + HOUR + 5 * MINUTE
        got = by_pair(await ipc.neighbors(["a"], UP, APP, TimeRange(T0, T0 + HOUR), now))
        recent = by_pair(await ipc.neighbors(["a"], UP, APP, TimeRange(T0 + 50 * MINUTE, T0 + HOUR), now))
        for shape, xs in samples.items():
            assert_quantiles_close(got[("a", shape)], xs, f"{shape}: minutes")
            assert_quantiles_close(recent[("a", shape)], xs[-10 * per_minute :], f"{shape}: last 10 minutes")
        # rolled up into an hour, the minutes past retention: the hour answers alone
        later = T0 + 3 * HOUR + 30 * MINUTE
        await ipc.rollup(later)
        assert (await ipc.window_count()).get(MINUTE, 0) == 0
        hour = by_pair(await ipc.neighbors(["a"], UP, APP, TimeRange(T0, T0 + HOUR), later))
        for shape, xs in samples.items():
            assert_quantiles_close(hour[("a", shape)], xs, f"{shape}: hour")
            assert hour[("a", shape)].latency == got[("a", shape)].latency

    async def test_edge_kinds_come_with_the_edges(self, stores: Stores) -> None:
        tr = stores.layers[TRACE]
        await tr.upsert_windows(
            [
                win("user", "web", LIVE_NOW - 120, layer=TRACE, source_kind=NodeKind.USER),
                win(
                    "web",
                    "orders-db",
                    LIVE_NOW - 120,
                    layer=TRACE,
                    target_kind=NodeKind.DATABASE,
                    connection_type="database",
                ),
            ]
        )
        [e] = await tr.neighbors(["web"], UP, APP, LIVE, LIVE_NOW)
        assert (e.source_kind, e.target_kind) == (NodeKind.SERVICE, NodeKind.DATABASE)
        assert e.stats.connection_type == "database"
        [u] = await tr.neighbors(["web"], DOWN, APP, LIVE, LIVE_NOW)
        assert u.source_kind is NodeKind.USER
        nodes = await tr.nodes(["orders-db", "user", "web", "missing"])
        assert set(nodes) == {"orders-db", "user", "web"}
        assert nodes["orders-db"].kind is NodeKind.DATABASE and nodes["web"].kind is NodeKind.SERVICE
        assert nodes["user"].kind is NodeKind.USER
        assert nodes["web"].layers == frozenset({TRACE}) and nodes["web"].granularity is APP

    async def test_bad_windows_are_refused_and_nothing_is_stored(self, stores: Stores) -> None:
        net = stores.layers[NET]
        good = win("a", "b", LIVE_NOW - 120)
        with pytest.raises(ValueError):
            await net.upsert_windows([good, win("a", "c", LIVE_NOW - 120, layer=IPC)])
        with pytest.raises(ValueError):
            await net.upsert_windows([good, win("a", "c", LIVE_NOW - 119)])  # not aligned to its minute
        assert await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW) == []
        assert (await net.window_count()).get(MINUTE, 0) == 0
        with pytest.raises(ValueError):
            await net.traverse(["a"], UP, -1, APP, LIVE, LIVE_NOW)

    # -- time ------------------------------------------------------------------------------------------
    async def test_an_edge_whose_traffic_stopped_leaves_the_live_window_but_stays_in_history(
        self, stores: Stores
    ) -> None:
        net = stores.layers[NET]
        await net.upsert_windows(
            minutes("a", "old", LIVE_NOW - 60 * MINUTE, 10)  # stopped 50 min ago
            + minutes("a", "new", LIVE_NOW - 60 * MINUTE, 60)
        )
        assert npairs(await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW)) == [("a", "new")]
        past = TimeRange(LIVE_NOW - 60 * MINUTE, LIVE_NOW - 45 * MINUTE)
        got = await net.neighbors(["a"], UP, APP, past, LIVE_NOW)
        assert npairs(got) == [("a", "new"), ("a", "old")]
        assert by_pair(got)[("a", "old")].requests == 100
        assert by_pair(got)[("a", "new")].requests == 150
        assert pairs(await net.edges(APP, LIVE, LIVE_NOW)) == [("a", "new")]
        assert [r.name for r in (await net.traverse(["a"], UP, 2, APP, past, LIVE_NOW)).reached] == [
            "new",
            "old",
        ]

    async def test_rollup_builds_hours_as_the_merge_of_their_minutes(
        self, stores_factory: StoresFactory
    ) -> None:
        stores = await stores_factory.fresh(Retention(minute=2 * HOUR, hour=2 * DAY, day=30 * DAY))
        ipc = stores.layers[IPC]
        ab = [
            win(
                "a",
                "b",
                T0 + m * MINUTE,
                layer=IPC,
                requests=m + 1,
                errors=m % 2,
                latency=LatencySketch.of([0.001 * (m + 1)]),
                latency_sum=0.001 * (m + 1),
                endpoints=(f"/e{m % 3}",),
            )
            for m in (0, 1, 30, 59)
        ]
        ac = [win("a", "c", T0 + 5 * MINUTE, layer=IPC, requests=3)]
        later = [win("a", "b", T0 + HOUR + 5 * MINUTE, layer=IPC, requests=1000)]  # its hour is not finished
        await ipc.upsert_windows(ab + ac + later)
        await ipc.rollup(T0 + HOUR + 30 * MINUTE)
        counts = await ipc.window_count()
        assert counts.get(HOUR) == 2 and counts.get(MINUTE) == 6 and counts.get(DAY, 0) == 0
        # two hours later the minutes of the first hour are past retention: the hour answers
        now = T0 + 3 * HOUR + 30 * MINUTE
        await ipc.rollup(now)
        counts = await ipc.window_count()
        assert counts.get(MINUTE, 0) == 0 and counts.get(HOUR) == 3
        got = by_pair(await ipc.neighbors(["a"], UP, APP, TimeRange(T0, T0 + HOUR), now))
        assert got[("a", "b")] == merged(ab)
        assert got[("a", "b")].requests == 1 + 2 + 31 + 60 and got[("a", "b")].errors == 2
        assert got[("a", "b")].endpoints == ("/e0", "/e1", "/e2")
        assert got[("a", "b")].first_seen == T0 and got[("a", "b")].last_seen == T0 + 59 * MINUTE + 59
        assert got[("a", "c")].requests == 3
        # an hour window also answers for any part of its hour, and the next hour is there too
        got = by_pair(await ipc.neighbors(["a"], UP, APP, TimeRange(T0 + 40 * MINUTE, T0 + 70 * MINUTE), now))
        assert got[("a", "b")].requests == merged(ab).requests + 1000
        # running it again changes nothing
        before = await ipc.edges(APP, TimeRange(T0, now), now)
        await ipc.rollup(now)
        assert await ipc.window_count() == counts
        assert await ipc.edges(APP, TimeRange(T0, now), now) == before

    async def test_rollup_builds_days_from_hours(self, stores_factory: StoresFactory) -> None:
        stores = await stores_factory.fresh(Retention(minute=2 * HOUR, hour=2 * DAY, day=30 * DAY))
        net = stores.layers[NET]
        ws = (
            minutes("a", "b", T0 + 10 * MINUTE, 3, bytes_sent=5)
            + minutes("a", "b", T0 + 5 * HOUR, 2, bytes_sent=7)
            + minutes("a", "b", T0 + 23 * HOUR + 59 * MINUTE, 1, bytes_sent=11)
        )
        await net.upsert_windows(ws)
        await net.rollup(T0 + DAY + HOUR)  # builds the 3 hours and the day
        counts = await net.window_count()
        assert counts.get(HOUR) == 3 and counts.get(DAY) == 1
        now = T0 + 4 * DAY
        await net.rollup(now)  # the hours are past retention now
        counts = await net.window_count()
        assert counts.get(MINUTE, 0) == 0 and counts.get(HOUR, 0) == 0 and counts.get(DAY) == 1
        [e] = await net.neighbors(["a"], UP, APP, TimeRange(T0 + 12 * HOUR, T0 + 13 * HOUR), now)
        assert e.stats == merged(ws)
        assert e.stats.bytes_sent == 3 * 5 + 2 * 7 + 11 and e.stats.requests == 60

    async def test_late_minutes_rebuild_their_hour(self, stores_factory: StoresFactory) -> None:
        stores = await stores_factory.fresh()
        net = stores.layers[NET]
        await net.upsert_windows(minutes("a", "b", T0, 2))
        now = T0 + 2 * HOUR
        await net.rollup(now)
        await net.upsert_windows(minutes("a", "b", T0 + 30 * MINUTE, 1, requests=5))  # arrives late
        await net.rollup(now)
        later = T0 + 8 * HOUR  # minutes past retention: the hour answers
        [e] = await net.neighbors(["a"], UP, APP, TimeRange(T0, T0 + HOUR), later)
        assert e.stats.requests == 25

    async def test_retention_deletes_old_windows_and_edges(self, stores_factory: StoresFactory) -> None:
        stores = await stores_factory.fresh(Retention(minute=HOUR, hour=DAY, day=7 * DAY))
        net = stores.layers[NET]
        await net.upsert_windows(minutes("a", "old", T0, 10) + minutes("a", "c", T0, 19, step=10))  # to T0+3h
        now = T0 + 3 * HOUR + MINUTE
        await net.rollup(now)
        counts = await net.window_count()
        # minute windows ending after now - 1 h survive: T0+2h10 .. T0+3h (6 of a->c)
        assert counts.get(MINUTE) == 6
        assert counts.get(HOUR) == 4  # a->old hour 0; a->c hours 0, 1, 2 (hour 3 is not finished)
        # the recent minutes still answer; the old edge is only in the hour windows now
        assert npairs(await net.neighbors(["a"], UP, APP, TimeRange(now - 50 * MINUTE, now), now)) == [
            ("a", "c")
        ]
        got = by_pair(await net.neighbors(["a"], UP, APP, TimeRange(T0, T0 + HOUR), now))
        assert got[("a", "old")].requests == 100 and got[("a", "c")].requests == 60
        now2 = T0 + 2 * DAY
        await net.rollup(now2)
        counts = await net.window_count()
        assert counts.get(MINUTE, 0) == 0 and counts.get(HOUR, 0) == 0 and counts.get(DAY) == 2
        got = by_pair(await net.neighbors(["a"], UP, APP, TimeRange(T0, T0 + HOUR), now2))
        assert got[("a", "old")].requests == 100 and got[("a", "c")].requests == 190
        await net.rollup(T0 + 9 * DAY)  # everything is past retention
        assert sum((await net.window_count()).values()) == 0
        assert await net.edges(APP, TimeRange(T0, T0 + 9 * DAY), T0 + 9 * DAY) == []
        assert await net.neighbors(["a"], UP, APP, TimeRange(T0, T0 + DAY), T0 + 9 * DAY) == []
        assert await net.nodes(["a", "old"]) == {}

    async def test_long_windows_include_what_is_not_rolled_up_yet_and_count_it_once(
        self, stores: Stores
    ) -> None:
        # the clock: 13:25:17 on day 40; roll-ups ran at 13:25, so hours to 13:00 and days to midnight
        # are built, and the minute windows of the current hour and the hours of today are not
        now = T0 + 40 * DAY + 13 * HOUR + 25 * MINUTE + 17
        today, hour, minute = align(now, DAY), align(now, HOUR), align(now, MINUTE)
        ipc = stores.layers[IPC]
        counter = itertools.count(1)

        def at(dst: str, first: int, count: int) -> list[EdgeWindow]:
            # every window its own number of requests: a window counted twice or missed shows
            return [win("a", dst, first + i * MINUTE, layer=IPC, requests=next(counter), errors=1,
                        latency=LatencySketch.of([0.01 * (i + 1)])) for i in range(count)]

        ws = {
            "b": at("b", today - 35 * DAY + 9 * HOUR, 2)  # before the 30 days (and outside their first day)
            + at("b", minute - 30 * DAY + HOUR, 2)  # inside the first, partly covered day of the 30
            + at("b", today - 3 * DAY + 5 * HOUR, 3) + at("b", minute - 20 * HOUR, 4)
            + at("b", today + 2 * HOUR + 10 * MINUTE, 2) + at("b", hour + 3 * MINUTE, 3),
            "c": at("c", minute - 10 * MINUTE, 5),  # only in the current hour
            "d": at("d", today + HOUR + 5 * MINUTE, 2),  # only earlier today
        }
        await ipc.upsert_windows([w for v in ws.values() for w in v])
        await ipc.rollup(minute)
        counts = await ipc.window_count()
        assert counts.get(DAY) and counts.get(HOUR) and counts.get(MINUTE)

        async def check(time: TimeRange, what: str) -> None:
            # the truth: the windows starting inside the range (the 30 days' first day holds none
            # before the range start), each once
            want = {
                EdgeKey(IPC, APP, "a", dst): merged(inside)
                for dst, v in sorted(ws.items())
                if (inside := [w for w in v if time.start <= w.window_start < time.end])
            }
            got = {s.key: s.stats for s in await ipc.neighbors(["a"], UP, APP, time, now)}
            assert {k: (s.requests, s.errors) for k, s in got.items()} == {
                k: (s.requests, s.errors) for k, s in want.items()}, what
            assert {k: s.latency for k, s in got.items()} == {k: s.latency for k, s in want.items()}, what
            metrics = dict(await ipc.call_metrics(["a"], UP, APP, time, now))
            assert metrics == {k: CallMetrics.of(s) for k, s in want.items()}, what
            assert pairs(await ipc.edges(APP, time, now)) == [(k.source, k.target) for k in want], what
            walked = await ipc.traverse(["a"], UP, 2, APP, time, now)
            assert sorted(r.name for r in walked.reached) == sorted(k.target for k in want), what

        await check(TimeRange.ending_at(now, DAY), "1 day")
        await check(TimeRange.ending_at(now, 7 * DAY), "7 days")
        await check(TimeRange.ending_at(now, 30 * DAY), "30 days")
        await check(TimeRange(today - 2 * DAY, now - 5 * MINUTE), "ends inside the current hour")
        # a late minute into an hour already rolled up counts at once, and once after its roll-up
        ws["b"] += at("b", hour - 3 * HOUR + 7 * MINUTE, 1)
        await ipc.upsert_windows(ws["b"][-1:])
        await check(TimeRange.ending_at(now, DAY), "1 day, a late minute")
        await check(TimeRange.ending_at(now, 30 * DAY), "30 days, a late minute")
        ws["c"] += at("c", hour + 5 * MINUTE, 1)  # late too, among the older minutes of this hour
        await ipc.upsert_windows(ws["c"][-1:])  # (the range asked last first: nothing stale is kept)
        await check(TimeRange.ending_at(now, 30 * DAY), "30 days, a late minute of this hour")
        await check(TimeRange.ending_at(now, DAY), "1 day, a late minute of this hour")
        await ipc.rollup(minute)
        await check(TimeRange.ending_at(now, DAY), "1 day, the late minute rolled up")
        await check(TimeRange.ending_at(now, 30 * DAY), "30 days, the late minute rolled up")

    async def test_the_finest_granularity_covering_the_range_start_answers(self, stores: Stores) -> None:
        net = stores.layers[NET]
        await net.upsert_windows([win("a", "b", T0 + 10 * MINUTE)])
        await net.rollup(T0 + 2 * HOUR)  # builds the hour, retention deletes nothing yet
        rng = TimeRange(T0 + 30 * MINUTE, T0 + 40 * MINUTE)
        # minute windows still cover the range start: the minute at T0+10 does not overlap
        assert await net.neighbors(["a"], UP, APP, rng, T0 + 2 * HOUR) == []
        # seven hours later the minute retention (6 h) no longer covers it: the hour window answers
        assert npairs(await net.neighbors(["a"], UP, APP, rng, T0 + 7 * HOUR)) == [("a", "b")]

    # -- separation ------------------------------------------------------------------------------------
    async def test_layers_are_separate_graphs(self, stores: Stores) -> None:
        await stores.layers[NET].upsert_windows(minutes("a", "b", LIVE_NOW - 5 * MINUTE, 2))
        await stores.layers[IPC].upsert_windows(minutes("a", "c", LIVE_NOW - 5 * MINUTE, 2, layer=IPC))
        assert npairs(await stores.layers[NET].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)) == [("a", "b")]
        assert npairs(await stores.layers[IPC].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)) == [("a", "c")]
        assert await stores.layers[TRACE].neighbors(["a"], UP, APP, LIVE, LIVE_NOW) == []
        assert (await stores.layers[TRACE].window_count()).get(MINUTE, 0) == 0
        assert await stores.layers[TRACE].nodes(["a", "b"]) == {}
        with pytest.raises(ValueError):
            await stores.layers[IPC].upsert_windows(
                minutes("x", "y", LIVE_NOW - 5 * MINUTE, 1)
            )  # a NETWORK one
        assert pairs(await stores.layers[IPC].edges(APP, LIVE, LIVE_NOW)) == [("a", "c")]

    async def test_app_and_cluster_are_separate_graphs(self, stores: Stores) -> None:
        net = stores.layers[NET]
        start = LIVE_NOW - 5 * MINUTE
        await net.upsert_windows(
            [
                win("a", "b", start),
                win("a-prod-v1", "b-prod-v2", start, gran=CLUSTER),
                win("a-prod-v1", "b-prod-v3", start, gran=CLUSTER),
            ]
        )
        assert npairs(await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW)) == [("a", "b")]
        assert await net.neighbors(["a"], UP, CLUSTER, LIVE, LIVE_NOW) == []
        assert await net.neighbors(["a-prod-v1"], UP, APP, LIVE, LIVE_NOW) == []
        assert pairs(await net.edges(CLUSTER, LIVE, LIVE_NOW)) == [
            ("a-prod-v1", "b-prod-v2"),
            ("a-prod-v1", "b-prod-v3"),
        ]
        assert pairs(await net.edges(APP, LIVE, LIVE_NOW)) == [("a", "b")]
        t = await net.traverse(["b-prod-v2"], DOWN, 3, CLUSTER, LIVE, LIVE_NOW)
        assert t.reached == (Reached("a-prod-v1", 1, "b-prod-v2"),)
        assert (await net.nodes(["b-prod-v3"]))["b-prod-v3"].granularity is CLUSTER

    # -- traversal -------------------------------------------------------------------------------------
    async def test_upstream_traversal_with_diamond_and_cycle(self, stores: Stores) -> None:
        await self._traversal_graph(stores)
        net = stores.layers[NET]
        t = await net.traverse(["a"], UP, 3, APP, LIVE, LIVE_NOW)
        assert t.reached == (
            Reached("b", 1, "a"),
            Reached("c", 1, "a"),
            Reached("d", 2, "b"),
            Reached("e", 3, "d"),
        )
        assert sorted(pairs(t.edges)) == [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e")]
        assert all(e.stats.requests == 50 for e in t.edges)
        t4 = await net.traverse(["a"], UP, 4, APP, LIVE, LIVE_NOW)
        assert t4.reached[-1] == Reached("f", 4, "e", NodeKind.DATABASE)
        assert len(t4.reached) == 5  # b is reached again through the cycle, but only listed once
        assert sorted(pairs(t4.edges)) == [
            ("a", "b"),
            ("a", "c"),
            ("b", "d"),
            ("c", "d"),
            ("d", "e"),
            ("e", "b"),
            ("e", "f"),
        ]
        assert len(t4.edges) == len(set(pairs(t4.edges)))
        assert (await net.traverse(["a"], UP, 10, APP, LIVE, LIVE_NOW)).reached == t4.reached

    async def test_downstream_traversal_is_the_blast_radius(self, stores: Stores) -> None:
        await self._traversal_graph(stores)
        net = stores.layers[NET]
        t = await net.traverse(["e"], DOWN, 2, APP, LIVE, LIVE_NOW)
        assert t.reached == (Reached("d", 1, "e"), Reached("b", 2, "d"), Reached("c", 2, "d"))
        assert sorted(pairs(t.edges)) == [("b", "d"), ("c", "d"), ("d", "e")]
        t = await net.traverse(["e"], DOWN, 4, APP, LIVE, LIVE_NOW)
        assert t.reached == (
            Reached("d", 1, "e"),
            Reached("b", 2, "d"),
            Reached("c", 2, "d"),
            Reached("a", 3, "b"),
            Reached("x", 4, "a"),
        )
        assert sorted(pairs(t.edges)) == [
            ("a", "b"),
            ("a", "c"),
            ("b", "d"),
            ("c", "d"),
            ("d", "e"),
            ("e", "b"),
            ("x", "a"),
        ]
        t = await net.traverse(["f"], DOWN, 1, APP, LIVE, LIVE_NOW)
        assert t.reached == (Reached("e", 1, "f"),) and pairs(t.edges) == [("e", "f")]

    async def test_without_stats_the_same_edges_and_kinds_and_later_stats_stay_right(
        self, stores: Stores
    ) -> None:
        await self._traversal_graph(stores)
        net = stores.layers[NET]

        def shape(edges: Sequence[EdgeSummary]) -> list[tuple[str, str, NodeKind, NodeKind]]:
            return sorted((e.key.source, e.key.target, e.source_kind, e.target_kind) for e in edges)

        S, DB = NodeKind.SERVICE, NodeKind.DATABASE
        # asked without stats first (nothing remembered yet), then with: the stats must be whole
        bare = await net.neighbors(["e", "a"], UP, APP, LIVE, LIVE_NOW, with_stats=False)
        assert shape(bare) == [("a", "b", S, S), ("a", "c", S, S), ("e", "b", S, S), ("e", "f", S, DB)]
        full = await net.neighbors(["e", "a"], UP, APP, LIVE, LIVE_NOW)
        assert shape(full) == shape(bare)
        assert all(st.requests == 50 for st in by_pair(full).values())
        bare = await net.neighbors(["d"], DOWN, APP, LIVE, LIVE_NOW, with_stats=False)
        assert shape(bare) == [("b", "d", S, S), ("c", "d", S, S)]
        # and asked without stats after they are known: still the same edges
        again = await net.neighbors(["e", "a"], UP, APP, LIVE, LIVE_NOW, with_stats=False)
        assert shape(again) == shape(full)
        # a new edge shows at once, with or without stats
        await net.upsert_windows(
            minutes("a", "z", LIVE_NOW - 2 * MINUTE, 1) + minutes("w", "d", LIVE_NOW - 2 * MINUTE, 1)
        )
        bare = await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW, with_stats=False)
        assert shape(bare) == [("a", "b", S, S), ("a", "c", S, S), ("a", "z", S, S)]
        bare = await net.neighbors(["d"], DOWN, APP, LIVE, LIVE_NOW, with_stats=False)
        assert shape(bare) == [("b", "d", S, S), ("c", "d", S, S), ("w", "d", S, S)]
        assert by_pair(await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW))[("a", "z")].requests == 10

        t = await net.traverse(["e"], DOWN, 4, APP, LIVE, LIVE_NOW, with_stats=False)
        assert t.reached == (
            Reached("d", 1, "e"),
            Reached("b", 2, "d"),
            Reached("c", 2, "d"),
            Reached("w", 2, "d"),
            Reached("a", 3, "b"),
            Reached("x", 4, "a"),
        )
        assert sorted(pairs(t.edges)) == [
            ("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e"), ("e", "b"), ("w", "d"), ("x", "a"),
        ]
        t = await net.traverse(["a"], UP, 4, APP, LIVE, LIVE_NOW, with_stats=False)
        assert t.reached[-1] == Reached("f", 4, "e", DB)
        t = await net.traverse(["a"], UP, 4, APP, LIVE, LIVE_NOW)
        assert len(t.edges) == 8
        assert all(e.stats.requests == (10 if e.key.target == "z" else 50) for e in t.edges)

    async def test_traversal_from_several_roots_and_edge_cases(self, stores: Stores) -> None:
        await self._traversal_graph(stores)
        net = stores.layers[NET]
        t = await net.traverse(["c", "b"], UP, 1, APP, LIVE, LIVE_NOW)
        assert t.reached == (Reached("d", 1, "b"),)
        assert sorted(pairs(t.edges)) == [("b", "d"), ("c", "d")]
        t = await net.traverse(["a", "b"], UP, 1, APP, LIVE, LIVE_NOW)  # a root reached from a root
        assert t.reached == (Reached("c", 1, "a"), Reached("d", 1, "b"))
        assert sorted(pairs(t.edges)) == [("a", "b"), ("a", "c"), ("b", "d")]
        empty = await net.traverse(["a"], UP, 0, APP, LIVE, LIVE_NOW)
        assert empty.reached == () and empty.edges == ()
        nobody = await net.traverse(["nobody"], DOWN, 3, APP, LIVE, LIVE_NOW)
        assert nobody.reached == () and nobody.edges == ()
        # d -> gone stopped long ago: not walked in the live window, walked in its own time
        t = await net.traverse(["d"], UP, 1, APP, LIVE, LIVE_NOW)
        assert [r.name for r in t.reached] == ["e"]
        t = await net.traverse(["d"], UP, 1, APP, TimeRange(T0, T0 + HOUR), LIVE_NOW)
        assert [r.name for r in t.reached] == ["gone"]

    async def test_traversal_matches_a_reference_bfs_on_a_random_graph(self, stores: Stores) -> None:
        rnd = random.Random(7)
        names = [f"s{i:02d}" for i in range(40)]
        edges = sorted({(rnd.choice(names), rnd.choice(names)) for _ in range(90)} - {(n, n) for n in names})
        await stores.layers[TRACE].upsert_windows(
            [win(s, t, LIVE_NOW - 3 * MINUTE, layer=TRACE) for s, t in edges]
        )
        for root in ("s00", "s07", "s13"):
            for direction in (UP, DOWN):
                want_reached, want_edges = _reference_bfs(edges, root, direction, 3)
                got = await stores.layers[TRACE].traverse([root], direction, 3, APP, LIVE, LIVE_NOW)
                assert got.reached == want_reached
                assert sorted(pairs(got.edges)) == want_edges

    async def test_expand_continues_walks_from_nodes_met_at_different_depths(self, stores: Stores) -> None:
        # every edge out of the starts and of what they reach in fewer hops than they have left, not
        # through ``done`` nodes nor other starts; a store may answer more (edges of done nodes and
        # beyond them), never less, each edge as ``neighbors`` answers it
        rnd = random.Random(17)
        names = [f"s{i:02d}" for i in range(30)]
        edges = sorted({(rnd.choice(names), rnd.choice(names)) for _ in range(70)} - {(n, n) for n in names})
        trc = stores.layers[TRACE]
        await trc.upsert_windows([win(s, t, LIVE_NOW - 3 * MINUTE, layer=TRACE) for s, t in edges])
        for direction in (UP, DOWN):
            adj: dict[str, list[str]] = {}
            for s, t in edges:
                near, far = (s, t) if direction is UP else (t, s)
                adj.setdefault(near, []).append(far)

            for _ in range(12):
                starts = {n: rnd.randint(0, 3) for n in rnd.sample(names, rnd.randint(1, 5))}
                done = set(rnd.sample(names, rnd.randint(0, 6)))
                got = await trc.expand(starts, done, direction, APP, LIVE, LIVE_NOW)
                assert len(got) == len({e.key for e in got})
                want = _expanded_edges(adj, direction, starts, done, strict=True)
                loose = _expanded_edges(adj, direction, starts, done, strict=False)
                assert want <= set(pairs(got)) <= loose, (direction, starts, done)
                sides = await trc.neighbors([e.key.source if direction is UP else e.key.target for e in got],
                                            direction, APP, LIVE, LIVE_NOW)
                assert set(got) <= set(sides)
        assert await trc.expand({}, set(), UP, APP, LIVE, LIVE_NOW) == []
        assert await trc.expand({"s00": 0, "nobody": 3}, set(), UP, APP, LIVE, LIVE_NOW) == []
        with pytest.raises(ValueError, match="hops"):
            await trc.expand({"s00": -1}, set(), UP, APP, LIVE, LIVE_NOW)

    async def test_edge_stats_are_the_stats_neighbors_answers_for_those_edges(self, stores: Stores) -> None:
        await self._traversal_graph(stores)
        net = stores.layers[NET]
        keys = [("d", "e"), ("a", "b"), ("d", "gone"), ("nobody", "a"), ("a", "b")]
        got = await net.edge_stats(keys, APP, LIVE, LIVE_NOW)
        want = [e for e in await net.neighbors(["a", "d"], UP, APP, LIVE, LIVE_NOW)
                if (e.key.source, e.key.target) in {("a", "b"), ("d", "e")}]
        assert got == want and pairs(got) == [("a", "b"), ("d", "e")]
        past = TimeRange(T0, T0 + HOUR)
        assert pairs(await net.edge_stats([("d", "gone")], APP, past, LIVE_NOW)) == [("d", "gone")]
        assert await net.edge_stats([], APP, LIVE, LIVE_NOW) == []
        assert await stores.layers[IPC].edge_stats([("a", "b")], APP, LIVE, LIVE_NOW) == []

    # -- listing ---------------------------------------------------------------------------------------
    # -- kept adjacency (optional) ---------------------------------------------------------------------
    async def test_kept_adjacency_is_every_present_edge_after_each_write(
        self, stores_factory: StoresFactory
    ) -> None:
        # ``adjacency`` is None (not offered) or exactly what ``edges`` answers, whatever was written,
        # rolled up or deleted since it was last asked
        stores = await stores_factory.fresh(Retention(minute=6 * HOUR, hour=2 * DAY, day=7 * DAY))
        net = stores.layers[NET]
        now = LIVE_NOW
        ranges = {"live": LIVE, "past": TimeRange(now - 40 * MINUTE, now - 30 * MINUTE),
                  "day": TimeRange.ending_at(now, DAY), "hour 0": TimeRange(T0, T0 + HOUR)}

        async def check(what: str, at: float = now) -> None:
            for name, rng in ranges.items():
                for gran in (APP, CLUSTER):
                    adjacency = await net.adjacency(gran, rng, at)
                    if adjacency is not None:
                        assert adjacency.pairs() == pairs(await net.edges(gran, rng, at)), f"{what}: {name}"

        await check("empty")
        await self._traversal_graph(stores)
        await check("the traversal graph")
        await net.upsert_windows(minutes("a", "b", now - 10 * MINUTE, 1, requests=99))  # a present edge again
        await check("a present edge's window written again")
        await net.upsert_windows([win("n", "a", now - 2 * MINUTE), win("p", "a", now - 35 * MINUTE)])
        await check("new edges, one live and one past")
        await net.upsert_windows([win("a-prod-v1", "b-prod-v2", now - 3 * MINUTE, gran=CLUSTER)])
        await check("a cluster edge")
        await net.rollup(now)
        await check("rolled up")
        await net.upsert_windows([win("late", "a", T0 + 20 * MINUTE)])  # into an hour already rolled up
        await check("a late minute")
        await net.rollup(now + 3 * DAY)
        await check("past minute and hour retention", now + 3 * DAY)
        await net.rollup(now + 9 * DAY)
        await check("everything deleted", now + 9 * DAY)

    async def test_blast_radius_over_kept_adjacency_is_the_level_walk(self, stores: Stores) -> None:
        await self._traversal_graph(stores)
        await stores.layers[IPC].upsert_windows(
            [*minutes("y", "e", LIVE_NOW - 5 * MINUTE, 2, layer=IPC),
             win("e", "q", LIVE_NOW - 5 * MINUTE, layer=IPC, target_kind=NodeKind.MESSAGING)])
        await stores.layers[TRACE].upsert_windows(minutes("z", "y", LIVE_NOW - 4 * MINUTE, 1, layer=TRACE))
        await stores.catalog.upsert_services([
            ServiceInfo("a", 0, "core", Owner("core", "core@example.com")),
            ServiceInfo("b", 1, "core", Owner("core", None, "#core")),
            ServiceInfo("y", 1, "edge", Owner("edge")), ServiceInfo("x", 2, "edge", None)])
        for root in ("f", "e", "d", "a", "q", "gone", "nobody"):
            for depth in (0, 1, 2, 4, 6):
                await assert_kept_walk_is_level_walk(stores, root, depth, time=LIVE, now=LIVE_NOW)
            await assert_kept_walk_is_level_walk(stores, root, 6, time=TimeRange(T0, LIVE_NOW), now=LIVE_NOW,
                                                 tiers=frozenset({1}), layers=[NET, IPC])

    async def test_edges_are_sorted_and_paginated_by_keyset(self, stores: Stores) -> None:
        net = stores.layers[NET]
        want = [("a", "b"), ("a", "c"), ("a", "z"), ("b", "a"), ("c", "d"), ("m", "n"), ("z", "a")]
        await net.upsert_windows(
            [win(s, t, LIVE_NOW - 2 * MINUTE) for s, t in reversed(want)] + [win("q", "stale", T0)]
        )
        assert pairs(await net.edges(APP, LIVE, LIVE_NOW)) == want
        pages: list[tuple[str, str]] = []
        after: tuple[str, str] | None = None
        while True:
            page = await net.edges(APP, LIVE, LIVE_NOW, limit=3, after=after)
            assert len(page) <= 3
            if not page:
                break
            pages += pairs(page)
            after = pairs(page)[-1]
        assert pages == want
        assert pairs(await net.edges(APP, LIVE, LIVE_NOW, limit=2, after=("a", "d"))) == [
            ("a", "z"),
            ("b", "a"),
        ]
        assert await net.edges(APP, LIVE, LIVE_NOW, limit=0) == []
        assert await net.edges(APP, LIVE, LIVE_NOW, after=("z", "a")) == []

    async def test_names_that_look_like_code_are_just_names(self, stores: Stores) -> None:
        net = stores.layers[NET]
        chain = list(NASTY_NAMES)
        await net.upsert_windows([win(s, t, LIVE_NOW - 2 * MINUTE) for s, t in itertools.pairwise(chain)])
        t = await net.traverse([chain[0]], UP, len(chain), APP, LIVE, LIVE_NOW)
        assert [r.name for r in t.reached] == chain[1:]
        assert [r.via for r in t.reached] == chain[:-1]
        assert pairs(await net.edges(APP, LIVE, LIVE_NOW)) == sorted(itertools.pairwise(chain))
        back = await net.neighbors([chain[-1]], DOWN, APP, LIVE, LIVE_NOW)
        assert npairs(back) == [(chain[-2], chain[-1])]
        assert set(await net.nodes(chain)) == set(chain)
        cat = stores.catalog
        await cat.upsert_services([ServiceInfo(n, tier=1, owner=Owner("t'eam")) for n in chain])
        assert set(await cat.services(chain)) == set(chain)
        got = await cat.list_names(ServiceFilter(owner_team="t'eam"), APP, 100, None)
        assert got == sorted(chain)
        await cat.record_health([HealthEvent(chain[0], HealthState.DEGRADED, 10.0, 'it\'s "bad"')])
        assert (await cat.health([chain[0]], 20.0))[chain[0]].reason == 'it\'s "bad"'

    # -- catalog ---------------------------------------------------------------------------------------
    async def test_services_are_looked_up_in_one_batch_and_replaced(self, stores: Stores) -> None:
        cat = stores.catalog
        a = ServiceInfo(
            "a",
            tier=0,
            domain="payments",
            owner=Owner("pay", "pay@x", "#pay", "pay-oncall"),
            clusters=("a-prod-v1",),
            links={"logs": "https://logs/a"},
        )
        await cat.upsert_services([a, ServiceInfo("b", tier=2)])
        assert await cat.services(["a", "b", "nope"]) == {"a": a, "b": ServiceInfo("b", tier=2)}
        await cat.upsert_services([ServiceInfo("b", tier=1, domain="video")])
        assert (await cat.services(["b"]))["b"] == ServiceInfo("b", tier=1, domain="video")
        assert await cat.services([]) == {}

    async def test_registered_nodes_merge(self, stores: Stores) -> None:
        cat = stores.catalog
        await cat.register_nodes(
            [NodeInfo("svc", NodeKind.UNINSTRUMENTED, APP, None, frozenset({TRACE}), 100, 200)]
        )
        await cat.register_nodes(
            [
                NodeInfo("svc", NodeKind.SERVICE, APP, None, frozenset({NET}), 50, 150),
                NodeInfo("svc-prod-v1", NodeKind.SERVICE, CLUSTER, "svc", frozenset({NET}), 50, 300),
            ]
        )
        await cat.register_nodes(
            [NodeInfo("svc", NodeKind.UNINSTRUMENTED, APP, None, frozenset({IPC}), 300, 400)]
        )
        got = await cat.known_nodes(["svc", "svc-prod-v1", "nope"])
        assert got["svc"] == NodeInfo(
            "svc", NodeKind.SERVICE, APP, None, frozenset({NET, IPC, TRACE}), 50, 400
        )
        assert got["svc-prod-v1"].app == "svc" and got["svc-prod-v1"].granularity is CLUSTER
        assert "nope" not in got

    async def test_list_names_filters_and_pages(self, stores: Stores) -> None:
        cat = stores.catalog
        await cat.upsert_services(
            [
                ServiceInfo(
                    "api", tier=0, domain="edge", owner=Owner("web"), clusters=("api-prod-v1", "api-prod-v2")
                ),
                ServiceInfo("billing", tier=1, domain="payments", owner=Owner("pay")),
                ServiceInfo(
                    "checkout", tier=1, domain="payments", owner=Owner("pay"), clusters=("checkout-prod-v7",)
                ),
                ServiceInfo("search", tier=2, domain="discovery", owner=Owner("find")),
            ]
        )
        await cat.register_nodes(
            [
                NodeInfo("api", NodeKind.SERVICE, APP, None, frozenset({NET, IPC}), 1, 2),
                NodeInfo("checkout", NodeKind.SERVICE, APP, None, frozenset({TRACE}), 1, 2),
                NodeInfo("orders-db", NodeKind.DATABASE, APP, None, frozenset({NET}), 1, 2),
                NodeInfo("orders-db", NodeKind.DATABASE, CLUSTER, None, frozenset({NET}), 1, 2),
                NodeInfo("api-prod-v1", NodeKind.SERVICE, CLUSTER, "api", frozenset({NET}), 1, 2),
                NodeInfo("checkout-prod-v7", NodeKind.SERVICE, CLUSTER, "checkout", frozenset({TRACE}), 1, 2),
            ]
        )
        everything = ServiceFilter()
        assert await cat.list_names(everything, APP, 100, None) == [
            "api",
            "billing",
            "checkout",
            "orders-db",
            "search",
        ]
        assert await cat.list_names(everything, APP, 2, None) == ["api", "billing"]
        assert await cat.list_names(everything, APP, 2, "billing") == ["checkout", "orders-db"]
        assert await cat.list_names(everything, APP, 2, "search") == []
        assert await cat.list_names(everything, APP, 2, "c") == ["checkout", "orders-db"]  # after a non-name
        assert await cat.list_names(ServiceFilter(tiers=frozenset({1})), APP, 100, None) == [
            "billing",
            "checkout",
        ]
        assert await cat.list_names(ServiceFilter(tiers=frozenset({0, 2})), APP, 100, None) == [
            "api",
            "search",
        ]
        assert await cat.list_names(ServiceFilter(domains=frozenset({"payments"})), APP, 1, "billing") == [
            "checkout"
        ]
        assert await cat.list_names(ServiceFilter(owner_team="find"), APP, 100, None) == ["search"]
        assert await cat.list_names(ServiceFilter(layers=frozenset({NET})), APP, 100, None) == [
            "api",
            "orders-db",
        ]
        assert await cat.list_names(ServiceFilter(layers=frozenset({TRACE, IPC})), APP, 100, None) == [
            "api",
            "checkout",
        ]
        assert await cat.list_names(ServiceFilter(name_prefix="o"), APP, 100, None) == ["orders-db"]
        assert await cat.list_names(ServiceFilter(name_prefix="zz"), APP, 100, None) == []
        assert await cat.list_names(
            ServiceFilter(tiers=frozenset({1}), layers=frozenset({TRACE})), APP, 100, None
        ) == ["checkout"]
        assert await cat.list_names(everything, CLUSTER, 100, None) == [
            "api-prod-v1",
            "api-prod-v2",
            "checkout-prod-v7",
            "orders-db",
        ]
        assert await cat.list_names(ServiceFilter(domains=frozenset({"payments"})), CLUSTER, 100, None) == [
            "checkout-prod-v7"
        ]
        assert await cat.list_names(ServiceFilter(layers=frozenset({NET})), CLUSTER, 100, None) == [
            "api-prod-v1",
            "orders-db",
        ]

    async def test_health_is_the_latest_event_at_or_before_the_time(self, stores: Stores) -> None:
        cat = stores.catalog
        events = [
            HealthEvent("s", HealthState.HEALTHY, 100.0),
            HealthEvent("s", HealthState.DEGRADED, 200.0, "slow"),
            HealthEvent("s", HealthState.UNHEALTHY, 300.0, "down"),
            HealthEvent("t", HealthState.HEALTHY, 150.0),
        ]
        await cat.record_health(list(reversed(events)))
        await cat.record_health(events)  # idempotent
        got = await cat.health(["s", "t", "u"], 250.0)
        assert set(got) == {"s", "t"}
        assert (got["s"].status, got["s"].since, got["s"].reason) == (HealthState.DEGRADED, 200.0, "slow")
        assert got["t"].status is HealthState.HEALTHY and got["t"].since == 150.0
        assert (await cat.health(["s"], 300.0))["s"].status is HealthState.UNHEALTHY
        assert (await cat.health(["s"], 299.999))["s"].status is HealthState.DEGRADED
        assert await cat.health(["s", "t"], 99.0) == {}
        assert set(await cat.health(["s", "t"], 120.0)) == {"s"}

    async def test_recent_traces_newest_first_and_bounded(self, stores: Stores) -> None:
        cat = stores.catalog

        def summary(i: int, services: tuple[str, ...] = ("api", "db")) -> TraceSummary:
            return TraceSummary(f"{i:032x}", "api", "GET /", 1000.0 + i, 0.01 * i, 3, i % 5 == 0, services)

        shuffled = [summary(i) for i in range(10)]
        random.Random(3).shuffle(shuffled)
        await cat.record_traces(shuffled)
        await cat.record_traces([summary(42, ("other",))])
        got = await cat.recent_traces("api", 4)
        assert [t.trace_id for t in got] == [f"{i:032x}" for i in (42, 9, 8, 7)]  # root service of 42 too
        assert got[1] == summary(9)
        assert [t.start for t in await cat.recent_traces("db", 100)] == [1000.0 + i for i in range(9, -1, -1)]
        assert [t.trace_id for t in await cat.recent_traces("other", 5)] == [f"{42:032x}"]
        assert await cat.recent_traces("nobody", 5) == []
        await cat.record_traces([summary(i, ("db",)) for i in range(100, 400)])
        kept = await cat.recent_traces("db", 1000)
        assert 100 <= len(kept) < 310  # bounded per service, and the newest are the ones kept
        assert [t.start for t in kept] == [1000.0 + i for i in range(399, 399 - len(kept), -1)]

    async def test_a_trace_is_kept_with_its_spans(self, stores: Stores) -> None:
        cat = stores.catalog
        spans = (
            TraceSpan("00000000000000a1", None, "web", "GET /", "SERVER", 1000.0, 0.25, False),
            TraceSpan("00000000000000a2", "00000000000000a1", "web", "GET", "CLIENT", 1000.01, 0.2, True),
            TraceSpan("00000000000000a3", "00000000000000a2", NASTY_NAMES[3], NASTY_NAMES[1], "SERVER",
                      1000.02, 0.15, True),
            TraceSpan("00000000000000a4", "00000000000000a3", NASTY_NAMES[3], "SELECT", "CLIENT",
                      1000.03, 0.01, False, NASTY_NAMES[0], "DATABASE"),
        )
        t = TraceSummary(f"{7:032x}", "web", "GET /", 1000.0, 0.25, 9, True, ("web", NASTY_NAMES[3]),
                         pack_spans(spans))
        await cat.record_traces([t])
        assert await cat.trace(t.trace_id) == t
        assert (await cat.trace(t.trace_id)).kept_spans == spans  # type: ignore[union-attr]
        assert (await cat.trace(t.trace_id)).truncated  # type: ignore[union-attr]  # 4 kept of 9
        assert await cat.trace(f"{8:032x}") is None
        assert await cat.recent_traces("web", 5) == [  # the per-service list keeps the summary only
            TraceSummary(t.trace_id, "web", "GET /", 1000.0, 0.25, 9, True, ("web", NASTY_NAMES[3]))
        ]
        again = TraceSummary(t.trace_id, "web", "GET /", 1000.0, 0.3, 1, False, ("web",),
                             pack_spans(spans[:1]))
        await cat.record_traces([again])  # the same id again: replaced
        assert await cat.trace(t.trace_id) == again

    async def test_the_trace_store_is_bounded_by_size_and_age(self, stores_factory: StoresFactory) -> None:
        stores = await stores_factory.fresh(Retention(traces=5, trace_seconds=100.0))
        cat = stores.catalog

        def summary(i: int, start: float) -> TraceSummary:
            span = TraceSpan(f"{i:016x}", None, "api", "GET /", "SERVER", start, 0.01, False)
            return TraceSummary(f"{i:032x}", "api", "GET /", start, 0.01, 1, False, ("api",),
                                pack_spans([span]))

        async def kept(ids: range) -> list[int]:
            return [i for i in ids if await cat.trace(f"{i:032x}") is not None]

        # eight traces one second apart: the five newest stay (equal starts: the larger id is newer)
        await cat.record_traces([summary(i, 1000.0 + i) for i in range(8)])
        assert await kept(range(10)) == [3, 4, 5, 6, 7]
        await cat.record_traces([summary(8, 1007.0), summary(9, 1007.0)])
        assert await kept(range(10)) == [5, 6, 7, 8, 9]
        # a trace starting 100.5 s after the newest: every older one is past the retention
        await cat.record_traces([summary(20, 1107.5)])
        assert await kept(range(30)) == [20]
        # one too old when it arrives is not kept; one within the retention is
        await cat.record_traces([summary(21, 1000.0), summary(22, 1010.0)])
        assert await kept(range(30)) == [20, 22]
        assert [t.trace_id for t in await cat.recent_traces("api", 100)][:1] == [f"{20:032x}"]

    async def test_changes_newest_first_within_the_range_and_idempotent(self, stores: Stores) -> None:
        cat = stores.catalog
        deploy = ChangeEvent("api", ChangeKind.DEPLOY, 300.0, "deploy v2", "v2", "ci", "https://ci/2")
        events = [
            ChangeEvent("api", ChangeKind.DEPLOY, 100.0, "deploy v1", "v1", "ci", None),
            ChangeEvent("api", ChangeKind.CONFIG, 200.0, "pool size 10 -> 20"),
            deploy,
            ChangeEvent("db", ChangeKind.SCALING, 200.0, "3 -> 5 replicas"),
            ChangeEvent("db", ChangeKind.INFRA, 200.0),
            ChangeEvent("other", ChangeKind.FEATURE_FLAG, 250.0, "checkout-v2 on"),
            ChangeEvent(NASTY_NAMES[0], ChangeKind.OTHER, 150.0, NASTY_NAMES[1]),
        ]
        await cat.record_changes(list(reversed(events)))
        await cat.record_changes(events)  # the same events again: stored once
        await cat.record_changes([])
        got = await cat.changes(["api", "db", "nobody"], 0.0, 1000.0, 100)
        assert [(e.service, e.at) for e in got] == [
            ("api", 300.0), ("api", 200.0), ("db", 200.0), ("db", 200.0), ("api", 100.0)
        ]
        assert got[0] == deploy
        same_time = [e for e in got if e.service == "db"]
        assert sorted(same_time, key=lambda e: e.key) == same_time  # equal times: by service, then key
        assert {e.kind for e in same_time} == {ChangeKind.SCALING, ChangeKind.INFRA}
        # both ends of the range are inside it; limit keeps the newest
        assert [e.at for e in await cat.changes(["api"], 100.0, 200.0, 10)] == [200.0, 100.0]
        assert [e.at for e in await cat.changes(["api", "db"], 0.0, 1000.0, 2)] == [300.0, 200.0]
        assert await cat.changes(["api"], 301.0, 400.0, 10) == []
        assert await cat.changes(["api"], 0.0, 1000.0, 0) == []
        assert await cat.changes([], 0.0, 1000.0, 10) == []
        assert await cat.changes([NASTY_NAMES[0]], 0.0, 1000.0, 10) == [events[-1]]
        # a changed record is another event: both are kept
        await cat.record_changes([ChangeEvent("api", ChangeKind.DEPLOY, 300.0, "deploy v2", "v2b")])
        assert len(await cat.changes(["api"], 300.0, 300.0, 10)) == 2
        with pytest.raises(ValueError):
            await cat.changes(["api"], 0.0, 1.0, -1)

    # -- queries over the interface: what changed ----------------------------------------------------
    async def _diff_graph(self, stores: Stores) -> None:
        """Before: [T0+5m, T0+10m); after: [T0+25m, T0+30m) (5 one-minute windows each).
        api -> db starts failing (IPC errors 0 -> 30 %), api -> old stops, api -> new starts; the rest
        stays as it was (web -> api on two layers, api -> cache on NETWORK, db -> disk two hops away)."""
        before, after = T0 + 5 * MINUTE, T0 + 25 * MINUTE
        net: list[EdgeWindow] = []
        ipc: list[EdgeWindow] = []
        for start in (before, after):
            net += minutes("web", "api", start, 5) + minutes("api", "cache", start, 5)
            ipc += minutes("web", "api", start, 5, layer=IPC, requests=100)
            ipc += minutes("db", "disk", start, 5, layer=IPC, requests=100, target_kind=NodeKind.DATABASE)
        ipc += minutes("api", "db", before, 5, layer=IPC, requests=100, errors=0)
        ipc += minutes("api", "db", after, 5, layer=IPC, requests=100, errors=30)
        ipc += minutes("api", "old", before, 5, layer=IPC, requests=100)
        ipc += minutes("api", "new", after, 5, layer=IPC, requests=100)
        await stores.layers[NET].upsert_windows(net)
        await stores.layers[IPC].upsert_windows(ipc)
        await stores.catalog.record_changes([
            ChangeEvent("api", ChangeKind.DEPLOY, T0 + 20 * MINUTE, "v2", "v2"),
            ChangeEvent("api", ChangeKind.CONFIG, T0 - HOUR),  # long before: not listed
            ChangeEvent("elsewhere", ChangeKind.DEPLOY, T0 + 20 * MINUTE),  # not involved
        ])

    async def test_diff_of_a_call_path_between_two_windows(self, stores: Stores) -> None:
        await self._diff_graph(stores)
        got = await diff(stores.layers, stores.catalog, "api", depth=2, before_end=T0 + 10 * MINUTE,
                         after_end=T0 + 30 * MINUTE, window=5 * MINUTE, now=T0 + HOUR)
        assert [(d.key, d.layers) for d in got.added] == [(("api", "new"), (IPC,))]
        assert [(d.key, d.layers) for d in got.removed] == [(("api", "old"), (IPC,))]
        (changed,) = got.changed
        assert (changed.key, changed.layers) == (("api", "db"), (IPC,))
        assert [(m.layer, m.metric, m.before, m.after) for m in changed.metrics] == [
            (IPC, EdgeMetric.ERROR_RATE, 0.0, 0.3)]
        assert got.services == ("api", "cache", "db", "disk", "new", "old", "web")
        assert [(c.service, c.kind) for c in got.changes] == [("api", ChangeKind.DEPLOY)]
        assert got.failures == ()
        up = await diff(stores.layers, stores.catalog, "api", depth=1, direction=DiffDirection.DOWNSTREAM,
                        before_end=T0 + 10 * MINUTE, after_end=T0 + 30 * MINUTE, window=5 * MINUTE,
                        now=T0 + HOUR)
        assert (up.added, up.removed, up.changed, up.services) == ((), (), (), ("api", "web"))
        # the same times compared with themselves: nothing changed
        same = await diff(stores.layers, stores.catalog, "api", depth=3, before_end=T0 + 30 * MINUTE,
                          after_end=T0 + 30 * MINUTE, window=5 * MINUTE, now=T0 + HOUR)
        assert (same.added, same.removed, same.changed) == ((), (), ())

    async def test_diff_of_the_whole_graph_pages_by_edge(self, stores: Stores) -> None:
        await self._diff_graph(stores)
        args: dict[str, Any] = dict(before_end=T0 + 10 * MINUTE, after_end=T0 + 30 * MINUTE,
                                    window=5 * MINUTE, now=T0 + HOUR)
        page = await diff(stores.layers, stores.catalog, None, depth=1, first=2, **args)
        assert [d.key for d in page.changed] == [("api", "db")]
        assert [d.key for d in page.added] == [("api", "new")]
        assert page.removed == () and page.has_next and page.end_cursor == ("api", "new")
        rest = await diff(stores.layers, stores.catalog, None, depth=1, first=2, after=page.end_cursor,
                          **args)
        assert [d.key for d in rest.removed] == [("api", "old")] and (rest.added, rest.changed) == ((), ())
        assert not rest.has_next
        assert [c.service for c in rest.changes] == ["api"]

    # -- queries over the interface: tier chains -----------------------------------------------------
    async def test_tier_violations_along_whole_chains(self, stores: Stores) -> None:
        """web, api, orders are tier 0, auth tier 1, pay tier 2, search has no catalog entry, db is a
        database: every tier-0 service that reaches auth, pay or search violates; db never does."""
        await stores.catalog.upsert_services([
            ServiceInfo("web", tier=0), ServiceInfo("api", tier=0), ServiceInfo("orders", tier=0),
            ServiceInfo("auth", tier=1), ServiceInfo("pay", tier=2)])
        now = LIVE_NOW - 5 * MINUTE
        net = [*minutes("web", "api", now, 1), *minutes("api", "auth", now, 1),
               *minutes("api", "orders", now, 1), *minutes("orders", "search", now, 1),
               *minutes("orders", "db", now, 1, target_kind=NodeKind.DATABASE)]
        ipc = [*minutes("orders", "pay", now, 1, layer=IPC), *minutes("auth", "pay", now, 1, layer=IPC)]
        await stores.layers[NET].upsert_windows(net)
        await stores.layers[IPC].upsert_windows(ipc)

        async def page(tier: int, first: int, after: tuple[str, str] | None = None) -> Any:
            return await tier_violations(stores.layers, stores.catalog, tier=tier, depth=5, time=LIVE,
                                         now=LIVE_NOW, first=first, after=after)

        every = await page(0, 100)
        assert [v.key for v in every.violations] == [
            ("api", "auth"), ("api", "pay"), ("api", "search"), ("orders", "pay"), ("orders", "search"),
            ("web", "auth"), ("web", "pay"), ("web", "search")]
        api_pay = every.violations[1]
        assert (api_pay.service_tier, api_pay.dependency_tier, api_pay.path) == (0, 2, ("api", "auth", "pay"))
        assert api_pay.path_layers == ((NET,), (IPC,))
        assert every.violations[2].dependency_tier is None and not every.has_next
        keys, after = [], None
        while True:
            got = await page(0, 3, after)
            keys += [v.key for v in got.violations]
            if not got.has_next:
                break
            after = got.end_cursor
        assert keys == [v.key for v in every.violations]
        one = await page(1, 100)
        assert ("auth", "pay") in [v.key for v in one.violations] and len(one.violations) == 9
        assert (await page(0, 100)).failures == ()

    # -- queries over the interface: who is Unknown --------------------------------------------------
    async def test_unknown_peers_are_the_unattributed_addresses_with_who_talked_to_them(
        self, stores: Stores
    ) -> None:
        now = LIVE_NOW - 5 * MINUTE
        u = NodeKind.UNKNOWN
        await stores.layers[NET].upsert_windows([
            win("api", "ip:10.9.0.7", now, target_kind=u, connections=5, bytes_sent=100, bytes_received=900,
                ports=(5432,)),
            win("worker", "ip:10.9.0.7", now + MINUTE, target_kind=u, connections=2, bytes_sent=10,
                ports=(5432, 6379)),
            win("ip:203.0.113.9", "api", now, source_kind=u, connections=1, bytes_received=50),
            win("api", "orders", now),  # attributed: not listed
            win("api", "ip:10.9.0.8", LIVE_NOW - 3 * HOUR, target_kind=u),  # outside the range asked
        ])
        got = await unknown_peers(stores.layers, time=LIVE, now=LIVE_NOW)
        assert [p.address for p in got.peers] == ["10.9.0.7", "203.0.113.9"] and not got.has_next
        db = got.peers[0]
        assert db.ports == {5432, 6379} and (db.connections, db.bytes) == (7, 1010)
        assert [(c.workload, c.outbound, c.connections) for c in db.contacts] == [("api", True, 5),
                                                                                   ("worker", True, 2)]
        assert (db.first_seen, db.last_seen) == (now, now + 2 * MINUTE - 1)
        inbound = got.peers[1]
        assert [(c.workload, c.outbound) for c in inbound.contacts] == [("api", False)] and not inbound.ports
        first = await unknown_peers(stores.layers, time=LIVE, now=LIVE_NOW, first=1)
        assert [p.name for p in first.peers] == ["ip:10.9.0.7"] and first.has_next
        rest = await unknown_peers(stores.layers, time=LIVE, now=LIVE_NOW, first=1, after=first.end_cursor)
        assert [p.name for p in rest.peers] == ["ip:203.0.113.9"] and not rest.has_next

    async def test_peer_leases_are_kept_per_address_and_the_nearest_ones_come_with_unknown_peers(
        self, stores: Stores
    ) -> None:
        now = LIVE_NOW - 5 * MINUTE
        u = NodeKind.UNKNOWN
        wl, db = AddressKind.WORKLOAD, AddressKind.DATABASE
        old = AddressLease("10.9.0.7", "billing", wl, now - 3 * HOUR, now - 2 * HOUR, "billing-eu")
        prev = AddressLease("10.9.0.7", "orders", wl, now - HOUR, now - 10 * MINUTE, "orders-eu")
        nxt = AddressLease("10.9.0.7", "orders-db", db, now + 4 * MINUTE)
        other = AddressLease("203.0.113.9", "payments", wl, now - 30 * MINUTE, now - 20 * MINUTE, "pay-1")
        cat = stores.catalog
        await cat.record_peer_leases([old, prev, nxt, other])
        await cat.record_peer_leases([prev])  # again: kept once
        closed = dataclasses.replace(nxt, end=now + HOUR)
        await cat.record_peer_leases([closed])  # the same lease, now with its end: replaces it
        assert await cat.peer_leases(["10.9.0.7", "203.0.113.9", "10.0.0.1", *NASTY_NAMES]) == {
            "10.9.0.7": [old, prev, closed], "203.0.113.9": [other]}
        assert await cat.peer_leases([]) == {}
        await stores.layers[NET].upsert_windows([
            win("api", "ip:10.9.0.7", now, target_kind=u),
            win("worker", "ip:10.9.0.7", now + MINUTE, target_kind=u),
            win("ip:10.9.0.8", "api", now, source_kind=u),
        ])
        got = await unknown_peers(stores.layers, time=LIVE, now=LIVE_NOW, catalog=cat)
        by_addr = {p.address: p for p in got.peers}
        # traffic seen in [now, now + 2 min): orders held the address until 10 minutes before, the
        # database from 4 minutes after; billing's older lease is not the nearest
        assert (by_addr["10.9.0.7"].lease_before, by_addr["10.9.0.7"].lease_after) == (prev, closed)
        assert (by_addr["10.9.0.8"].lease_before, by_addr["10.9.0.8"].lease_after) == (None, None)
        plain = await unknown_peers(stores.layers, time=LIVE, now=LIVE_NOW)  # without the catalog: none
        assert all(p.lease_before is None and p.lease_after is None for p in plain.peers)

    # -- persistence and health of the store ---------------------------------------------------------
    async def test_ping(self, stores: Stores) -> None:
        for layer in (NET, IPC, TRACE):
            await stores.layers[layer].ping()

    async def test_everything_survives_a_reopen(self, stores_factory: StoresFactory) -> None:
        if not stores_factory.supports_reopen:
            pytest.skip("this backend is not reopened in tests")
        stores = await stores_factory.fresh(Retention(minute=2 * HOUR, hour=2 * DAY, day=30 * DAY))
        await self._traversal_graph(stores)
        await stores.layers[IPC].upsert_windows(
            minutes("a", "b", T0, 3, layer=IPC, latency=LatencySketch.of([1.0]))
        )
        await stores.layers[IPC].rollup(LIVE_NOW)
        cat = stores.catalog
        await cat.upsert_services([ServiceInfo("a", tier=0, owner=Owner("web"))])
        await cat.register_nodes([NodeInfo("a", NodeKind.SERVICE, APP, None, frozenset({NET}), 1, 2)])
        await cat.record_health([HealthEvent("a", HealthState.DEGRADED, 5.0, "slow")])
        await cat.record_traces([TraceSummary("ab", "a", "GET", 7.0, 0.1, 2, False, ("a", "b"))])
        await cat.record_changes([ChangeEvent("a", ChangeKind.DEPLOY, 6.0, "v2", "v2")])

        async def snapshot(s: Stores) -> list[Any]:
            net, ipc = s.layers[NET], s.layers[IPC]
            return [
                await net.traverse(["a"], UP, 5, APP, LIVE, LIVE_NOW),
                await net.traverse(["f"], DOWN, 5, APP, LIVE, LIVE_NOW),
                await net.edges(APP, TimeRange(T0, LIVE_NOW), LIVE_NOW),
                await net.window_count(),
                await ipc.window_count(),
                await ipc.neighbors(["a"], UP, APP, TimeRange(T0, T0 + HOUR), T0 + 5 * HOUR),
                await net.nodes(["a", "f", "gone"]),
                await s.catalog.services(["a"]),
                await s.catalog.known_nodes(["a"]),
                await s.catalog.health(["a"], 10.0),
                await s.catalog.recent_traces("b", 5),
                await s.catalog.trace("ab"),
                await s.catalog.changes(["a"], 0.0, 10.0, 5),
                await s.catalog.list_names(ServiceFilter(), APP, 10, None),
            ]

        before = await snapshot(stores)
        reopened = await stores_factory.reopen()
        assert await snapshot(reopened) == before
        await reopened.layers[NET].upsert_windows(minutes("a", "new", LIVE_NOW - 2 * MINUTE, 1))
        assert "new" in {
            r.name for r in (await reopened.layers[NET].traverse(["a"], UP, 1, APP, LIVE, LIVE_NOW)).reached
        }


def _expanded_edges(
    adj: dict[str, list[str]], direction: Direction, starts: dict[str, int], done: set[str], strict: bool
) -> set[tuple[str, str]]:
    """What ``LayerStore.expand`` answers: edges out of each start not done and out of what it reaches
    in fewer hops than it has (strict: not through done nodes nor other starts)."""
    expanded: set[str] = set()
    for start, hops in starts.items():
        if start in done:
            continue
        seen, level = {start}, [start]
        for _ in range(hops):
            expanded.update(level)
            level = [f for n in level for f in adj.get(n, [])
                     if f not in seen and not (strict and (f in done or f in starts))]
            seen.update(level)
    return {(n, f) if direction is UP else (f, n) for n in expanded for f in adj.get(n, [])}


def _reference_bfs(
    edges: Sequence[tuple[str, str]], root: str, direction: Direction, depth: int
) -> tuple[tuple[Reached, ...], list[tuple[str, str]]]:
    """The traversal rules of this contract, written as plainly as possible."""
    adj: dict[str, list[str]] = {}
    for s, t in edges:
        if direction is UP:
            adj.setdefault(s, []).append(t)
        else:
            adj.setdefault(t, []).append(s)
    seen = {root}
    frontier = [root]
    reached: list[Reached] = []
    walked: set[tuple[str, str]] = set()
    for level in range(1, depth + 1):
        found: dict[str, str] = {}
        for name in frontier:
            for other in adj.get(name, []):
                walked.add((name, other) if direction is UP else (other, name))
                if other not in seen and (other not in found or name < found[other]):
                    found[other] = name
        seen.update(found)
        reached += [Reached(n, level, via) for n, via in sorted(found.items())]
        frontier = sorted(found)
    return tuple(reached), sorted(walked)
