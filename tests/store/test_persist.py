"""persist(): the one way stage-3 output reaches the stores (in-process runtime and Kafka stage 3),
against the embedded store: every part written, idempotent, a failing layer raised after the others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.store.contract import IPC, NET, T0, TRACE, win
from topology.catalog import TraceSummary
from topology.model import Granularity, Layer, NodeKind
from topology.store.base import Stores, StoreUnavailable
from topology.store.embedded import open_stores
from topology.store.persist import by_layer, nodes_of, persist

WINDOWS = [
    win("web", "api", T0, layer=NET), win("web", "api", T0 + 60, layer=NET),
    win("api", "db", T0, layer=IPC, target_kind=NodeKind.DATABASE),
    win("web", "api", T0, layer=TRACE),
]
TRACE_SUMMARY = TraceSummary("ab" * 16, "web", "GET /", T0 + 1.0, 0.25, 3, False, ("web", "api"))


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    s = open_stores(tmp_path / "store")
    yield s
    await s.close()


async def _contents(stores: Stores) -> dict[str, Any]:
    return {
        "windows": {layer: await stores.layers[layer].window_count() for layer in Layer},
        "nodes": await stores.catalog.known_nodes(["web", "api", "db"]),
        "traces": await stores.catalog.recent_traces("api", 10),
    }


async def test_windows_of_every_layer_their_nodes_and_traces_are_written(stores: Stores) -> None:
    assert await persist(stores, by_layer(WINDOWS), [TRACE_SUMMARY]) == 5
    got = await _contents(stores)
    assert got["windows"] == {NET: {60: 2}, IPC: {60: 1}, TRACE: {60: 1}}
    assert got["nodes"]["web"].layers == frozenset({NET, TRACE})
    assert got["nodes"]["api"].layers == frozenset(Layer)
    assert got["nodes"]["db"].kind is NodeKind.DATABASE and got["nodes"]["db"].layers == frozenset({IPC})
    assert got["traces"] == [TRACE_SUMMARY]


async def test_writing_the_same_output_again_changes_nothing(stores: Stores) -> None:
    await persist(stores, by_layer(WINDOWS), [TRACE_SUMMARY])
    once = await _contents(stores)
    await persist(stores, by_layer(WINDOWS), [TRACE_SUMMARY])
    assert await _contents(stores) == once


async def test_a_failing_layer_is_raised_after_the_others_and_a_retry_completes(
        stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    async def unavailable(windows: Any) -> None:
        raise StoreUnavailable(IPC, "IPC store is down")

    monkeypatch.setattr(stores.layers[IPC], "upsert_windows", unavailable)
    with pytest.raises(StoreUnavailable):
        await persist(stores, by_layer(WINDOWS), [TRACE_SUMMARY])
    half = await _contents(stores)
    assert half["windows"][NET] == {60: 2} and half["windows"][TRACE] == {60: 1}
    assert half["windows"][IPC] == {} and half["nodes"] == {}  # nodes follow their windows
    monkeypatch.undo()
    await persist(stores, by_layer(WINDOWS), [TRACE_SUMMARY])
    assert (await _contents(stores))["windows"][IPC] == {60: 1}


def test_nodes_merge_kinds_apps_layers_and_times() -> None:
    a = win("web-v1", "db", T0, layer=NET, gran=Granularity.CLUSTER, target_kind=NodeKind.UNKNOWN)
    b = win("web-v1", "db", T0 + 60, layer=IPC, gran=Granularity.CLUSTER, target_kind=NodeKind.DATABASE)
    nodes = {(n.name, n.granularity): n for n in nodes_of(by_layer([a, b]))}
    db = nodes[("db", Granularity.CLUSTER)]
    assert db.layers == frozenset({NET, IPC})
    assert (db.first_seen, db.last_seen) == (T0, T0 + 119)
    assert len(nodes) == 2
