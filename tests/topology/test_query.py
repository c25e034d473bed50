"""The unified query engine on the real embedded store, with the fleet of tests/service/fleet.py."""

from __future__ import annotations

import asyncio
import pathlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.service.fleet import (
    IPC_API_ORDERS,
    LIVE,
    NET_API_ORDERS,
    NOW,
    PAST,
    TRACE_API_ORDERS,
    fill,
)
from tests.topology.blast import (
    assert_kept_traverse_is_level_traverse,
    assert_kept_walk_is_level_walk,
    assert_whole_traverse_is_level_traverse,
)
from topology import query
from topology.catalog import Owner, ServiceInfo
from topology.model import Direction, EdgeKey, EdgeWindow, Granularity, Layer, NodeKind
from topology.stats import EdgeStats
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange

LIVE_RANGE = TimeRange.ending_at(NOW, 900)
NET, IPC, TRC = Layer.NETWORK, Layer.IPC, Layer.TRACE


@pytest.fixture
async def stores(tmp_path: pathlib.Path) -> AsyncIterator[Stores]:
    s = open_stores(tmp_path / "store")
    await fill(s)
    yield s
    await s.close()


def _summary(walk: query.UnifiedTraversal) -> list[tuple[str, int, str, tuple[Layer, ...]]]:
    return [(d.name, d.depth, d.via, d.edge.layers) for d in walk.reached]


async def _up(stores: Stores, root: str, depth: int, **kw: Any) -> query.UnifiedTraversal:
    kw.setdefault("time", LIVE_RANGE)
    return await query.traverse(stores.layers, [root], Direction.UPSTREAM, depth, now=NOW, **kw)


async def test_a_path_combines_edges_of_different_layers(stores: Stores) -> None:
    walk = await _up(stores, "api", 3)
    assert _summary(walk) == [
        ("auth", 1, "api", (NET,)),
        ("orders", 1, "api", (NET, IPC, TRC)),
        ("orders-db", 2, "orders", (NET,)),
        ("payments", 2, "orders", (IPC,)),
        ("ledger", 3, "payments", (TRC,)),
    ]
    assert walk.failures == () and walk.answered == (NET, IPC, TRC)
    db = next(d for d in walk.reached if d.name == "orders-db")
    assert db.kind is NodeKind.DATABASE


async def test_each_layer_keeps_its_own_stats_side_by_side(stores: Stores) -> None:
    walk = await _up(stores, "api", 1)
    orders = next(d for d in walk.reached if d.name == "orders")
    assert orders.edge.stats(NET) == NET_API_ORDERS
    assert orders.edge.stats(IPC) == IPC_API_ORDERS
    assert orders.edge.stats(TRC) == TRACE_API_ORDERS


async def test_depth_limits_the_walk(stores: Stores) -> None:
    assert [d.name for d in (await _up(stores, "api", 1)).reached] == ["auth", "orders"]
    assert (await _up(stores, "api", 0)).reached == ()


async def test_one_layer_alone(stores: Stores) -> None:
    walk = await _up(stores, "api", 3, layers=[IPC])
    assert _summary(walk) == [("orders", 1, "api", (IPC,)), ("payments", 2, "orders", (IPC,))]
    assert walk.layers == (IPC,)


async def test_downstream_follows_callers(stores: Stores) -> None:
    walk = await query.traverse(stores.layers, ["payments"], Direction.DOWNSTREAM, 10, time=LIVE_RANGE,
                                now=NOW)
    assert _summary(walk) == [
        ("orders", 1, "payments", (IPC,)),
        ("api", 2, "orders", (NET, IPC, TRC)),
        ("edge-gateway", 3, "api", (NET, IPC)),
        ("user", 4, "edge-gateway", (TRC,)),
    ]
    assert walk.reached[-1].kind is NodeKind.USER


async def test_the_past_has_other_edges(stores: Stores) -> None:
    past = await _up(stores, "api", 1, time=TimeRange.ending_at(PAST + 60, 900))
    assert [d.name for d in past.reached] == ["legacy"]
    assert "legacy" not in [d.name for d in (await _up(stores, "api", 1)).reached]


async def test_cluster_granularity(stores: Stores) -> None:
    walk = await _up(stores, "api-prod-v1", 2, granularity=Granularity.CLUSTER)
    assert _summary(walk) == [("orders-prod-v3", 1, "api-prod-v1", (NET,))]


async def test_via_is_the_smallest_parent_at_the_same_depth(tmp_path: pathlib.Path) -> None:
    s = open_stores(tmp_path / "diamond")
    try:
        def w(layer: Layer, src: str, dst: str) -> EdgeWindow:
            return EdgeWindow(EdgeKey(layer, Granularity.APP, src, dst), int(LIVE), 60,
                              EdgeStats(first_seen=LIVE, last_seen=LIVE + 1, requests=1))

        await s.layers[NET].upsert_windows([w(NET, "a", "c"), w(NET, "c", "d"), w(NET, "d", "a")])
        await s.layers[IPC].upsert_windows([w(IPC, "a", "b"), w(IPC, "b", "d")])
        walk = await _up(s, "a", 5)
        # d is reached at depth 2 from both b (IPC) and c (NETWORK); the cycle back to a is walked,
        # not reported
        assert _summary(walk) == [("b", 1, "a", (IPC,)), ("c", 1, "a", (NET,)), ("d", 2, "b", (IPC,))]
        assert [e.key for e in walk.edges] == [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "a")]
    finally:
        await s.close()


class _Raising:
    """Delegates to a real store, but ``neighbors``/``edges`` raise ``exc``."""

    def __init__(self, inner: Any, exc: Exception) -> None:
        self._inner, self._exc = inner, exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def neighbors(self, *args: Any) -> Any:
        raise self._exc

    async def edges(self, *args: Any) -> Any:
        raise self._exc


async def test_a_closed_layer_is_reported_and_the_others_answer(stores: Stores) -> None:
    await stores.layers[IPC].close()
    walk = await _up(stores, "api", 3)
    # without IPC, payments (and ledger behind it) cannot be reached
    assert _summary(walk) == [
        ("auth", 1, "api", (NET,)),
        ("orders", 1, "api", (NET, TRC)),
        ("orders-db", 2, "orders", (NET,)),
    ]
    assert [(f.layer, f.expected) for f in walk.failures] == [(IPC, True)]
    assert "closed" in walk.failures[0].message
    assert walk.answered == (NET, TRC)


async def test_any_exception_is_a_failed_layer_with_a_safe_message(stores: Stores) -> None:
    layers = dict(stores.layers)
    layers[TRC] = _Raising(layers[TRC], RuntimeError("secret internals"))  # type: ignore[assignment]
    walk = await query.traverse(layers, ["api"], Direction.UPSTREAM, 3, time=LIVE_RANGE, now=NOW)
    assert [d.name for d in walk.reached] == ["auth", "orders", "orders-db", "payments"]
    (failure,) = walk.failures
    assert failure.layer is TRC and not failure.expected
    assert "secret" not in failure.message and "RuntimeError" in failure.message
    assert isinstance(failure.cause, RuntimeError)


async def test_a_layer_without_a_store_is_a_failure(stores: Stores) -> None:
    layers = {NET: stores.layers[NET]}
    walk = await query.traverse(layers, ["api"], Direction.UPSTREAM, 1, layers=[NET, IPC], time=LIVE_RANGE,
                                now=NOW)
    assert [d.name for d in walk.reached] == ["auth", "orders"]
    assert [f.layer for f in walk.failures] == [IPC]


class _Barrier:
    """Each layer's ``neighbors`` waits until every layer has entered it: sequential calls would time out."""

    def __init__(self, inner: Any, entered: list[str], all_in: asyncio.Event, n: int) -> None:
        self._inner, self._entered, self._all_in, self._n = inner, entered, all_in, n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def neighbors(self, *args: Any) -> Any:
        self._entered.append(self._inner.layer.value)
        if len(self._entered) == self._n:
            self._all_in.set()
        await asyncio.wait_for(self._all_in.wait(), 10)
        return await self._inner.neighbors(*args)


async def test_layers_are_asked_concurrently(stores: Stores) -> None:
    entered: list[str] = []
    all_in = asyncio.Event()
    layers = {k: _Barrier(v, entered, all_in, 3) for k, v in stores.layers.items()}
    walk = await query.traverse(layers, ["api"], Direction.UPSTREAM, 1, time=LIVE_RANGE, now=NOW)  # type: ignore[arg-type]
    assert walk.failures == ()
    assert sorted(entered) == ["IPC", "NETWORK", "TRACE"]


ALL_LIVE_EDGES = [
    (("api", "auth"), (NET,)),
    (("api", "orders"), (NET, IPC, TRC)),
    (("edge-gateway", "api"), (NET, IPC)),
    (("orders", "orders-db"), (NET,)),
    (("orders", "payments"), (IPC,)),
    (("payments", "ledger"), (TRC,)),
    (("user", "edge-gateway"), (TRC,)),
]


async def test_flat_graph_pages_through_the_merged_edges(stores: Stores) -> None:
    seen: list[tuple[tuple[str, str], tuple[Layer, ...]]] = []
    after = None
    pages = []
    while True:
        g = await query.flat_graph(stores.layers, time=LIVE_RANGE, now=NOW, first=3, after=after)
        pages.append(len(g.edges))
        seen.extend((e.key, e.layers) for e in g.edges)
        if not g.has_next:
            break
        after = g.end_cursor
    assert seen == ALL_LIVE_EDGES
    assert pages == [3, 3, 1]


async def test_flat_graph_nodes_are_the_ends_of_the_page(stores: Stores) -> None:
    g = await query.flat_graph(stores.layers, time=LIVE_RANGE, now=NOW, first=2)
    assert g.nodes == (("api", NodeKind.SERVICE), ("auth", NodeKind.SERVICE), ("orders", NodeKind.SERVICE))
    assert g.has_next and g.end_cursor == ("api", "orders")


async def test_flat_graph_with_a_selection_keeps_edges_between_selected_nodes(stores: Stores) -> None:
    asked: list[list[str]] = []

    async def select(names: Any) -> set[str]:
        asked.append(list(names))
        return {"api", "orders", "payments", "edge-gateway"}

    g = await query.flat_graph(stores.layers, time=LIVE_RANGE, now=NOW, first=2, select=select)
    assert [e.key for e in g.edges] == [("api", "orders"), ("edge-gateway", "api")]
    assert g.has_next  # orders -> payments follows
    g2 = await query.flat_graph(stores.layers, time=LIVE_RANGE, now=NOW, first=2, after=g.end_cursor,
                                select=select)
    assert [e.key for e in g2.edges] == [("orders", "payments")] and not g2.has_next
    assert len(asked) == 2  # one batched selection per call (the batch holds every edge here)


async def test_flat_graph_with_a_failed_layer(stores: Stores) -> None:
    await stores.layers[TRC].close()
    g = await query.flat_graph(stores.layers, time=LIVE_RANGE, now=NOW, first=100)
    assert [e.key for e in g.edges] == [k for k, lay in ALL_LIVE_EDGES if lay != (TRC,)]
    assert [f.layer for f in g.failures] == [TRC] and not g.has_next


async def test_blast_radius_counts_tiers_and_names_teams(stores: Stores) -> None:
    r = await query.blast_radius(stores.layers, stores.catalog, "payments", 10, time=LIVE_RANGE, now=NOW)
    assert [d.name for d in r.affected] == ["orders", "api", "edge-gateway", "user"]
    assert r.by_tier == ((0, 1), (1, 2), (None, 1))
    assert [(t.owner.team, t.services) for t in r.teams] == [
        ("commerce", ("orders",)), ("core", ("api",)), ("edge", ("edge-gateway",))]
    assert r.teams[0].owner.oncall == "commerce-pager"
    assert r.unowned == ("user",)


async def test_blast_radius_filters_count_but_the_walk_passes_through(stores: Stores) -> None:
    r = await query.blast_radius(stores.layers, stores.catalog, "payments", 10, time=LIVE_RANGE, now=NOW,
                                 tiers=frozenset({0}))
    assert [d.name for d in r.affected] == ["edge-gateway"]  # behind orders and api (tier 1)
    assert r.by_tier == ((0, 1),)
    assert [t.owner.team for t in r.teams] == ["edge"]


def test_merge_kinds() -> None:
    K = NodeKind
    assert query.merge_kinds([K.UNINSTRUMENTED, K.SERVICE]) is K.SERVICE
    assert query.merge_kinds([K.UNKNOWN, K.DATABASE]) is K.DATABASE
    assert query.merge_kinds([K.UNKNOWN]) is K.UNKNOWN
    assert query.merge_kinds([]) is K.UNKNOWN


def test_matches_filter() -> None:
    from topology.catalog import ServiceInfo

    info = ServiceInfo("x", tier=1, domain="core")
    assert query.matches_filter(info, None, None)
    assert query.matches_filter(info, frozenset({1, 2}), frozenset({"core"}))
    assert not query.matches_filter(info, frozenset({0}), None)
    assert not query.matches_filter(info, None, frozenset({"edge"}))
    assert not query.matches_filter(None, frozenset({1}), None)
    assert query.matches_filter(None, None, None)


def test_live_window_start_is_inside_the_live_range() -> None:
    assert LIVE_RANGE.overlaps(LIVE, LIVE + 60) and not LIVE_RANGE.overlaps(PAST, PAST + 60)


# -- the blast radius over kept adjacency against the level walk -------------------------------------
@pytest.mark.parametrize("depth", [0, 1, 2, 3, 5, 10])
async def test_kept_blast_radius_is_the_level_walk_on_the_hand_built_fleet(
    stores: Stores, depth: int
) -> None:
    past = TimeRange(PAST - 300, PAST + 300)
    for root in ["payments", "orders", "api", "orders-db", "ledger", "legacy", "user", "nobody"]:
        for kw in ({}, {"layers": [IPC, TRC]}, {"layers": [NET]}, {"tiers": frozenset({0, 1})},
                   {"domains": frozenset({"core", "edge"})}, {"time": past}, {"with_stats": False}):
            kw = {"time": LIVE_RANGE, **kw}
            await assert_kept_walk_is_level_walk(stores, root, depth, now=NOW, **kw)
    await assert_kept_walk_is_level_walk(stores, "orders-prod-v3", depth, time=LIVE_RANGE, now=NOW,
                                         granularity=Granularity.CLUSTER)
    for root in ["api", "edge-gateway", "user", "orders"]:
        await assert_kept_traverse_is_level_traverse(stores, [root], Direction.UPSTREAM, depth,
                                                     time=LIVE_RANGE, now=NOW)
        await assert_kept_traverse_is_level_traverse(stores, [root, "payments"], Direction.UPSTREAM, depth,
                                                     time=past, now=NOW, layers=[NET, TRC])


async def test_kept_blast_radius_reads_only_the_edges_asked_for(stores: Stores) -> None:
    r = await query.blast_radius(stores.layers, stores.catalog, "payments", 10, time=LIVE_RANGE, now=NOW)
    first = r.affected[:1]
    with pytest.raises(RuntimeError, match="fetch_edges"):
        _ = first[0].edge
    with pytest.raises(RuntimeError, match="keeps no edges"):
        _ = r.traversal.walked
    await r.traversal.fetch_edges(first)
    dep = first[0]
    assert (dep.name, dep.edge.key, dep.edge.layers) == ("orders", ("orders", "payments"), (IPC,))
    with pytest.raises(RuntimeError, match="fetch_edges"):
        _ = r.affected[1].edge


async def test_kept_blast_radius_is_the_level_walk_on_random_layered_graphs(tmp_path: pathlib.Path) -> None:
    # three layers that share some nodes and edges, cycles and self-loops, edges that left the live
    # window, kinds that disagree between layers, a catalog with tiers, domains and shared teams
    rnd = random.Random(5)
    stores = open_stores(tmp_path / "random")
    try:
        names = [f"s{i:02d}" for i in range(40)]
        windows = []
        for layer in Layer:
            for _ in range(90):
                src, dst = rnd.choice(names), rnd.choice(names)
                start = rnd.choice([LIVE, LIVE - 60, NOW - 1800, PAST])
                kind = rnd.choice([NodeKind.SERVICE, NodeKind.SERVICE, NodeKind.DATABASE, NodeKind.UNKNOWN])
                windows.append(EdgeWindow(EdgeKey(layer, Granularity.APP, src, dst), int(start), 60,
                                          EdgeStats(requests=rnd.randint(1, 99)), NodeKind.SERVICE, kind))
        for layer in Layer:
            await stores.layers[layer].upsert_windows([w for w in windows if w.key.layer is layer])
        await stores.catalog.upsert_services([
            ServiceInfo(n, rnd.choice([0, 1, 2, None]), rnd.choice(["a", "b"]),
                        rnd.choice([None, Owner(f"team-{i % 7}", rnd.choice([None, f"t{i % 7}@x"]))]))
            for i, n in enumerate(names) if rnd.random() < 0.8])
        ranges = [LIVE_RANGE, TimeRange(NOW - 2400, NOW - 1200), TimeRange.ending_at(NOW, 3 * 3600)]
        for root in rnd.sample(names, 12):
            for depth in (1, 2, 3, 5, 8):
                for time in ranges:
                    await assert_kept_walk_is_level_walk(stores, root, depth, time=time, now=NOW)
                await assert_kept_walk_is_level_walk(stores, root, depth, time=LIVE_RANGE, now=NOW,
                                                     tiers=frozenset({0}), layers=[Layer.IPC, Layer.NETWORK])
                await assert_kept_traverse_is_level_traverse(stores, [root, "s00"], Direction.UPSTREAM, depth,
                                                             time=LIVE_RANGE, now=NOW)
    finally:
        await stores.close()


# -- each layer's whole walk (what remote stores get) against the level walk -------------------------
@pytest.mark.parametrize("depth", [0, 1, 2, 3, 5])
async def test_whole_walks_are_the_level_walk_on_the_hand_built_fleet(stores: Stores, depth: int) -> None:
    past = TimeRange(PAST - 300, PAST + 300)
    for root in ["payments", "orders", "api", "orders-db", "ledger", "legacy", "user", "nobody"]:
        for direction in Direction:
            asks: list[dict[str, Any]] = [{}, {"layers": [IPC, TRC]}, {"layers": [NET]}, {"time": past},
                                          {"with_stats": False}]
            for ask in asks:
                kw = {"time": LIVE_RANGE, **ask}
                await assert_whole_traverse_is_level_traverse(stores, [root], direction, depth, now=NOW, **kw)
    await assert_whole_traverse_is_level_traverse(stores, ["orders-prod-v3"], Direction.UPSTREAM, depth,
                                                  time=LIVE_RANGE, now=NOW, granularity=Granularity.CLUSTER)
    await assert_whole_traverse_is_level_traverse(stores, ["api", "payments"], Direction.DOWNSTREAM, depth,
                                                  time=LIVE_RANGE, now=NOW)


async def test_whole_walks_are_the_level_walk_on_random_layered_graphs(tmp_path: pathlib.Path) -> None:
    # three layers with different edges among the same 30 names: most paths cross layers, so a layer's
    # own walk misses nodes the union reaches, and they are walked in it again (several rounds)
    rnd = random.Random(11)
    stores = open_stores(tmp_path / "random")
    try:
        names = [f"s{i:02d}" for i in range(30)]
        for layer in Layer:
            kinds = [NodeKind.SERVICE, NodeKind.DATABASE, NodeKind.UNKNOWN]
            await stores.layers[layer].upsert_windows([
                EdgeWindow(EdgeKey(layer, Granularity.APP, rnd.choice(names), rnd.choice(names)),
                           int(rnd.choice([LIVE, LIVE - 60, PAST])), 60,
                           EdgeStats(requests=rnd.randint(1, 99)), NodeKind.SERVICE, rnd.choice(kinds))
                for _ in range(45)])
        rounds = 0
        for root in rnd.sample(names, 10):
            for depth in (1, 2, 3, 4, 6):
                for direction in Direction:
                    for with_stats in (True, False):
                        await assert_whole_traverse_is_level_traverse(
                            stores, [root], direction, depth, time=LIVE_RANGE, now=NOW, with_stats=with_stats)
                await assert_whole_traverse_is_level_traverse(
                    stores, [root, "s00"], Direction.UPSTREAM, depth, time=TimeRange.ending_at(NOW, 3 * 3600),
                    now=NOW, layers=[Layer.IPC, Layer.TRACE])
        calls: list[int] = []
        trc = stores.layers[TRC]
        real = trc.expand

        async def counted(*a: Any, **kw: Any) -> Any:
            calls.append(1)
            return await real(*a, **kw)

        trc.expand = counted  # type: ignore[method-assign]
        for root in names:
            calls.clear()
            await query.traverse(stores.layers, [root], Direction.UPSTREAM, 4, time=LIVE_RANGE, now=NOW,
                                 whole=True)
            rounds = max(rounds, len(calls))
        assert rounds > 1  # the graphs are such that some walks need a second round
    finally:
        await stores.close()


async def test_whole_walks_keep_the_edges_of_a_layer_that_failed_later(stores: Stores) -> None:
    # a layer that answers its first walk and fails the next: reported once, its first edges kept
    ipc = stores.layers[IPC]
    real = ipc.expand
    calls: list[int] = []

    async def failing_later(*a: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return await real(*a, **kw)

    ipc.expand = failing_later  # type: ignore[method-assign]
    walk = await query.traverse(stores.layers, ["api"], Direction.UPSTREAM, 3, time=LIVE_RANGE, now=NOW,
                                whole=True)
    assert len(calls) > 1  # api's upstream crosses layers: IPC is asked again
    assert [(f.layer, f.expected) for f in walk.failures] == [(IPC, False)]
    assert walk.answered == (NET, TRC)
    first = await ipc.traverse(["api"], Direction.UPSTREAM, 3, Granularity.APP, LIVE_RANGE, NOW)
    assert {(e.key.source, e.key.target) for e in first.edges} <= set(walk.walked[IPC])
    ipc.expand = real  # type: ignore[method-assign]


async def test_a_whole_walk_reads_the_stats_of_the_edges_asked_for_only(stores: Stores) -> None:
    asked: list[list[tuple[str, str]]] = []
    for layer in Layer:
        real = stores.layers[layer].edge_stats

        async def counted(keys: Any, *a: Any, _real: Any = real) -> Any:
            asked.append(list(keys))
            return await _real(keys, *a)

        stores.layers[layer].edge_stats = counted  # type: ignore[method-assign]
    for root in ["payments", "orders", "api", "user"]:
        for direction in Direction:
            level = await query.traverse(stores.layers, [root], direction, 3, time=LIVE_RANGE, now=NOW)
            later = await query.traverse(stores.layers, [root], direction, 3, time=LIVE_RANGE, now=NOW,
                                         whole=True, stats_on_fetch=True)
            assert [(d.name, d.depth, d.via, d.edge.key, d.edge.layers, d.kind) for d in later.reached] == [
                (d.name, d.depth, d.via, d.edge.key, d.edge.layers, d.kind) for d in level.reached]
            asked.clear()
            page = later.reached[1:3]
            await later.fetch_edges(page)
            assert {k for keys in asked for k in keys} == {d.key for d in page}
            assert [d.edge for d in page] == [d.edge for d in level.reached[1:3]]
            asked.clear()
            await later.fetch_edges(page)  # read once
            assert asked == []
            await level.fetch_edges(level.reached)  # a walk that kept its stats: nothing to read
            assert asked == []


async def test_kept_blast_radius_follows_writes(stores: Stores) -> None:
    # a new caller of payments appears in the live window, then one of its windows is re-written: the
    # kept walk sees what the level walk sees after each write
    await assert_kept_walk_is_level_walk(stores, "payments", 10, time=LIVE_RANGE, now=NOW)
    new = EdgeWindow(EdgeKey(TRC, Granularity.APP, "batch", "payments"), int(LIVE), 60,
                     EdgeStats(requests=5), NodeKind.SERVICE, NodeKind.SERVICE)
    await stores.layers[TRC].upsert_windows([new])
    r = await assert_kept_walk_is_level_walk(stores, "payments", 10, time=LIVE_RANGE, now=NOW)
    assert ("batch", 1, "payments") in [(d.name, d.depth, d.via) for d in r.affected]
    await stores.layers[TRC].upsert_windows([new])
    await assert_kept_walk_is_level_walk(stores, "payments", 10, time=LIVE_RANGE, now=NOW)


async def test_kept_blast_radius_is_the_level_walk_on_the_simulated_fleet(tmp_path: pathlib.Path) -> None:
    # the simulator's fleet through the real pipeline (tests/e2e/simfleet.py): the most depended-on
    # services and a sample of the others, at several depths, filtered and not
    from tests.e2e.simfleet import fill as simulate

    await simulate(tmp_path / "sim", services=200, minutes=2.0, end=NOW)
    stores = open_stores(tmp_path / "sim")
    try:
        callers: dict[str, int] = {}
        for layer in Layer:
            for e in await stores.layers[layer].edges(Granularity.APP, LIVE_RANGE, NOW):
                callers[e.key.target] = callers.get(e.key.target, 0) + 1
        assert len(callers) > 100
        hubs = sorted(callers, key=lambda n: (-callers[n], n))[:8]
        rnd = random.Random(3)
        for root in hubs + rnd.sample(sorted(callers), 12):
            for depth in (1, 3, 5, 10):
                await assert_kept_walk_is_level_walk(stores, root, depth, time=LIVE_RANGE, now=NOW,
                                                     with_stats=depth != 3)
            await assert_kept_walk_is_level_walk(stores, root, 5, time=LIVE_RANGE, now=NOW,
                                                 tiers=frozenset({0, 1}), layers=[Layer.IPC, Layer.TRACE])
        big = await query.blast_radius(stores.layers, stores.catalog, hubs[0], 5, time=LIVE_RANGE, now=NOW)
        assert len(big.affected) > 20 and big.teams  # the walk has something to compare
    finally:
        await stores.close()
