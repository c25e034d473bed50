"""What only the JanusGraph store does: physical separation of the layer graphs, schema and
indexes on the server, one round trip per write batch, stale cached ids, unreachable servers."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import Bytecode
from gremlin_python.structure.graph import Graph

from tests.janusgraph.test_contract import JanusGraphFactory
from tests.store.contract import (
    APP,
    DOWN,
    IPC,
    LIVE,
    LIVE_NOW,
    NET,
    T0,
    TRACE,
    UP,
    _reference_bfs,
    minutes,
    pairs,
    win,
)
from topology.model import Layer, NodeKind
from topology.store import janusgraph_layer, janusgraph_schema
from topology.store.base import Stores, StoreUnavailable
from topology.store.janusgraph import TRAVERSAL_SOURCES, open_janusgraph_stores
from topology.store.janusgraph_catalog import JanusGraphCatalogStore
from topology.store.janusgraph_layer import JanusGraphLayerStore, pair_key
from topology.store.janusgraph_pool import GremlinPool, GremlinQueryError
from topology.timewindow import HOUR, MINUTE, Retention, TimeRange

pytestmark = pytest.mark.janusgraph

G = Graph().traversal()


@pytest.fixture
async def factory(janusgraph_url: str) -> AsyncIterator[JanusGraphFactory]:
    f = JanusGraphFactory(janusgraph_url)
    yield f
    await f.close()


def layer_store(stores: Stores, layer: Layer) -> JanusGraphLayerStore:
    s = stores.layers[layer]
    assert isinstance(s, JanusGraphLayerStore)
    return s


async def raw(stores: Stores, layer: Layer | None, t: Any) -> list[Any]:
    """Ask one graph directly (through the store's pool), bypassing the store's logic."""
    if layer is None:
        assert isinstance(stores.catalog, JanusGraphCatalogStore)
        return await stores.catalog.pool.submit(t.bytecode)
    return await layer_store(stores, layer).pool.submit(t.bytecode)


async def test_writing_one_layer_leaves_the_other_graphs_untouched(factory: JanusGraphFactory) -> None:
    stores = await factory.fresh()
    await stores.layers[NET].upsert_windows(minutes("a", "b", LIVE_NOW - 5 * MINUTE, 3))
    counts = {
        layer: await raw(stores, layer, G.V().group_count().by(__.label())) for layer in TRAVERSAL_SOURCES
    }
    assert counts[NET] == [{"node": 2, "pair": 1, "slot": 4}]  # 3 minute slots + the hour they mark
    assert counts[IPC] == [{}] and counts[TRACE] == [{}]
    assert await raw(stores, None, G.V().count()) == [0]
    assert await raw(stores, NET, G.V().has("node", "name", "a").count()) == [1]
    for other in (IPC, TRACE):
        assert await raw(stores, other, G.V().has("node", "name", "a").count()) == [0]
    # and each traversal source holds only its own layer
    await stores.layers[IPC].upsert_windows(minutes("c", "d", LIVE_NOW - 5 * MINUTE, 1, layer=IPC))
    assert sorted(await raw(stores, NET, G.V().has_label("node").values("name"))) == ["a", "b"]
    assert sorted(await raw(stores, IPC, G.V().has_label("node").values("name"))) == ["c", "d"]
    assert await raw(stores, TRACE, G.V().count()) == [0]


async def test_schema_and_indexes_exist_and_are_enabled(factory: JanusGraphFactory) -> None:
    stores = await factory.fresh()
    pool = layer_store(stores, NET).pool
    names = ["node_by_name", "pair_by_key", "pair_by_gran", "w60_ws", "w3600_ws", "w86400_ws"]
    status = await pool.submit(
        "def m = g.getGraph().openManagement(); try { names.collect { n -> "
        "def i = m.getGraphIndex(n); "
        "i == null ? n + '=missing' : n + '=' + i.getIndexStatus(i.getFieldKeys()[0]) "
        "} } finally { m.rollback() }",
        {"names": names},
    )
    assert status == [f"{n}=ENABLED" for n in names]
    vci = await pool.submit(
        "def m = g.getGraph().openManagement(); try { labels.collect { l -> "
        "def i = m.getRelationIndex(m.getEdgeLabel(l), l + '_by_ws'); "
        "i == null ? 'missing' : i.getIndexStatus().toString() "
        "} } finally { m.rollback() }",
        {"labels": ["w60", "w3600", "w86400"]},
    )
    assert vci == ["ENABLED"] * 3
    # nothing else may invent keys: the graphs run with schema.default=none
    with pytest.raises(GremlinQueryError, match="not_in_the_schema"):
        await pool.submit(G.add_v("node").property("not_in_the_schema", 1).bytecode)


async def test_a_batch_of_windows_of_known_edges_is_one_round_trip(factory: JanusGraphFactory) -> None:
    stores = await factory.fresh()
    net = layer_store(stores, NET)
    edges = [(f"s{i}", f"t{i % 7}") for i in range(40)]
    await net.upsert_windows([win(s, t, LIVE_NOW - 10 * MINUTE) for s, t in edges])  # creates the pairs
    before = net.pool.requests
    batch = [w for s, t in edges for w in minutes(s, t, LIVE_NOW - 9 * MINUTE, 5)]
    await net.upsert_windows(batch)
    assert net.pool.requests - before == 1
    assert (await net.window_count())[MINUTE] == 40 * 6
    [e] = await net.neighbors(["s3"], UP, APP, LIVE, LIVE_NOW)
    assert e.stats.requests == 60


async def test_kinds_follow_the_latest_window_written(factory: JanusGraphFactory) -> None:
    stores = await factory.fresh()
    tr = stores.layers[TRACE]
    await tr.upsert_windows([win("web", "pay", LIVE_NOW - 3 * MINUTE, layer=TRACE,
                                 target_kind=NodeKind.UNINSTRUMENTED)])
    [e] = await tr.neighbors(["web"], UP, APP, LIVE, LIVE_NOW)
    assert e.target_kind is NodeKind.UNINSTRUMENTED
    await tr.upsert_windows([win("web", "pay", LIVE_NOW - 2 * MINUTE, layer=TRACE)])  # pay now reports
    [e] = await tr.neighbors(["web"], UP, APP, LIVE, LIVE_NOW)
    assert e.target_kind is NodeKind.SERVICE and e.stats.requests == 20
    t = await tr.traverse(["web"], UP, 1, APP, LIVE, LIVE_NOW)
    assert t.reached[0].kind is NodeKind.SERVICE
    reopened = await factory.reopen()  # what is stored, not only this process's cache
    [e] = await reopened.layers[TRACE].neighbors(["web"], UP, APP, LIVE, LIVE_NOW)
    assert e.target_kind is NodeKind.SERVICE


async def test_a_large_batch_is_written_in_concurrent_chunks(factory: JanusGraphFactory) -> None:
    stores = await factory.fresh()
    net = layer_store(stores, NET)
    net.batch_size = 7  # many chunks, some pairs with several windows
    batch = [w for i in range(30) for w in minutes(f"c{i}", f"d{i % 4}", T0 + 10 * MINUTE, 1 + i % 3)]
    await net.upsert_windows(batch)
    await net.upsert_windows(batch)  # idempotent
    assert (await net.window_count()) == {MINUTE: len(batch)}
    assert (await net.rollup(T0 + 2 * HOUR)).built == 30  # every window was marked for its hour
    whole = TimeRange(T0, T0 + HOUR)
    got = {(e.key.source, e.key.target): e.stats.requests for e in await net.edges(APP, whole, T0 + 2 * HOUR)}
    assert got == {(f"c{i}", f"d{i % 4}"): 10 * (1 + i % 3) for i in range(30)}


async def test_deep_traversals_continue_in_further_round_trips(
    factory: JanusGraphFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(janusgraph_layer, "LEVELS_PER_TRAVERSAL", 2)
    stores = await factory.fresh()
    net = layer_store(stores, NET)
    rnd = random.Random(11)
    names = [f"n{i:02d}" for i in range(30)]
    edges = sorted({(rnd.choice(names), rnd.choice(names)) for _ in range(45)} - {(n, n) for n in names})
    edges += [(f"chain{i}", f"chain{i + 1}") for i in range(7)]
    await net.upsert_windows([win(s, t, LIVE_NOW - 3 * MINUTE) for s, t in edges])
    for root, depth in (("n00", 7), ("n05", 5), ("chain0", 9), ("chain3", 1)):
        for direction in (UP, DOWN):
            before = net.pool.requests
            want_reached, want_edges = _reference_bfs(edges, root, direction, depth)
            got = await net.traverse([root], direction, depth, APP, LIVE, LIVE_NOW)
            assert got.reached == want_reached, (root, direction)
            assert pairs(got.edges) == want_edges
            assert net.pool.requests - before <= (depth + 1) // 2


async def test_neighbors_of_many_names_split_over_connections(
    factory: JanusGraphFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(janusgraph_layer, "NAMES_PER_TRAVERSAL", 2)
    stores = await factory.fresh()
    net = layer_store(stores, NET)
    edges = [(f"a{i}", f"b{i % 3}") for i in range(9)] + [("b0", "c"), ("a1", "b0")]
    await net.upsert_windows([win(s, t, LIVE_NOW - 3 * MINUTE) for s, t in set(edges)])
    await net.upsert_windows([win("a8", "z", LIVE_NOW - 3 * HOUR)])  # not live
    before = net.pool.requests
    up = await net.neighbors([f"a{i}" for i in range(9)] + ["b0"], UP, APP, LIVE, LIVE_NOW)
    assert net.pool.requests - before > 1
    assert pairs(up) == sorted(set(edges))
    down = await net.neighbors(["b0", "b1", "b2", "c", "z"], DOWN, APP, LIVE, LIVE_NOW)
    assert pairs(down) == sorted(set(edges))


async def test_a_pair_removed_behind_the_stores_back_is_recreated(factory: JanusGraphFactory) -> None:
    stores = await factory.fresh()
    net = layer_store(stores, NET)
    await net.upsert_windows(minutes("a", "b", LIVE_NOW - 10 * MINUTE, 2))
    # another process (a roll-up elsewhere) removed the pair: the cached vertex id is stale
    await raw(stores, NET, G.V().has("pair", "pkey", pair_key(APP, "a", "b")).drop())
    await net.upsert_windows(minutes("a", "b", LIVE_NOW - 5 * MINUTE, 1, requests=7))
    [e] = await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
    assert e.stats.requests == 7
    assert await raw(stores, NET, G.V().has("pair", "pkey", pair_key(APP, "a", "b")).count()) == [1]


async def test_gremlin_looking_names_are_stored_verbatim(factory: JanusGraphFactory) -> None:
    stores = await factory.fresh()
    evil = ['"); g.V().drop(); ("', "x').drop().V('", "${7*7}", "\\u0000", "g_ipc.V()"]
    await stores.layers[TRACE].upsert_windows(
        [win("user", n, LIVE_NOW - 2 * MINUTE, layer=TRACE, source_kind=NodeKind.USER) for n in evil]
    )
    names = await raw(stores, TRACE, G.V().has_label("node").values("name"))
    assert sorted(names) == sorted([*evil, "user"])
    got = await stores.layers[TRACE].neighbors([evil[0]], DOWN, APP, LIVE, LIVE_NOW)
    assert pairs(got) == [("user", evil[0])]
    assert await raw(stores, IPC, G.V().count()) == [0]  # nothing escaped into another graph


async def test_every_request_binds_its_values(
    factory: JanusGraphFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injection safety and the server's script cache: a layer store sends traversals as bytecode
    (names travel as arguments) and no script but the schema's constant one, its spec bound."""
    sent: list[tuple[Any, Any]] = []
    submit = GremlinPool.submit

    async def recording(self: GremlinPool, message: Any, bindings: Any = None, time_limit: Any = None) -> Any:
        sent.append((message, bindings))
        return await submit(self, message, bindings, time_limit)

    monkeypatch.setattr(GremlinPool, "submit", recording)
    stores = await factory.fresh()
    net = layer_store(stores, NET)
    evil = '"); g.V().drop(); ("'
    await net.upsert_windows([win("a", evil, LIVE_NOW - 2 * MINUTE), win(evil, "c", LIVE_NOW - MINUTE)])
    assert pairs(await net.neighbors([evil], UP, APP, LIVE, LIVE_NOW)) == [(evil, "c")]
    got = await net.traverse(["a"], UP, 3, APP, LIVE, LIVE_NOW)
    assert pairs(got.edges) == sorted([("a", evil), (evil, "c")])
    assert len(await net.edges(APP, TimeRange(T0, LIVE_NOW), LIVE_NOW)) == 2
    assert set(await net.nodes([evil])) == {evil}
    await net.rollup(LIVE_NOW + HOUR)
    scripts = [(m, b) for m, b in sent if not isinstance(m, Bytecode)]
    assert sent and all(m == janusgraph_schema._ENSURE and set(b) == {"spec"} for m, b in scripts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_server_makes_every_store_unavailable_naming_its_layer() -> None:
    url = f"ws://127.0.0.1:{_free_port()}/gremlin"
    with pytest.raises(StoreUnavailable):
        await open_janusgraph_stores(url, Retention(), pool_size=1, require=True)
    stores = await open_janusgraph_stores(url, Retention(), pool_size=1)  # lazy: opens anyway
    try:
        for layer in (NET, IPC, TRACE):
            with pytest.raises(StoreUnavailable) as err:
                await stores.layers[layer].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
            assert err.value.layer is layer
            with pytest.raises(StoreUnavailable):
                await stores.layers[layer].ping()
        with pytest.raises(StoreUnavailable) as err:
            await stores.catalog.services(["a"])
        assert err.value.layer is None
    finally:
        await stores.close()


async def test_pool_rejects_a_bad_size() -> None:
    with pytest.raises(ValueError):
        GremlinPool("ws://127.0.0.1:1/gremlin", "g_network", NET, size=0)
