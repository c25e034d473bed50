"""The embedded store's kept adjacency: kept while the present edges stay, built again when they change
(that it always equals ``edges`` is the contract's test)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from tests.store.contract import APP, CLUSTER, LIVE, LIVE_NOW, NET, T0, minutes, win
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.timewindow import DAY, HOUR, MINUTE, Retention, TimeRange


@pytest.fixture
async def stores(tmp_path: pathlib.Path) -> AsyncIterator[Stores]:
    s = open_stores(tmp_path / "store", Retention(minute=6 * HOUR, hour=2 * DAY, day=7 * DAY))
    yield s
    await s.close()


async def test_kept_while_writes_leave_the_present_edges_as_they_are(stores: Stores) -> None:
    net = stores.layers[NET]
    await net.upsert_windows([*minutes("a", "b", LIVE_NOW - 10 * MINUTE, 5), win("c", "a", T0)])
    first = await net.adjacency(APP, LIVE, LIVE_NOW)
    assert first is not None and first.pairs() == [("a", "b")]
    # the same range asked again, a minute later in the same windows, or after a present edge's
    # next window: the same object
    assert await net.adjacency(APP, LIVE, LIVE_NOW) is first
    assert await net.adjacency(APP, TimeRange(LIVE.start + 20, LIVE.end), LIVE_NOW + 20) is first
    await net.upsert_windows(minutes("a", "b", LIVE_NOW - 3 * MINUTE, 1, requests=7))
    assert await net.adjacency(APP, LIVE, LIVE_NOW) is first
    # an edge outside the range, or of the other granularity, leaves it too
    await net.upsert_windows([win("d", "a", T0 + MINUTE),
                              win("a-1", "b-1", LIVE_NOW - 2 * MINUTE, gran=CLUSTER)])
    assert await net.adjacency(APP, LIVE, LIVE_NOW) is first
    # an edge coming into the range: built again, with it
    await net.upsert_windows([win("d", "a", LIVE_NOW - 2 * MINUTE)])
    second = await net.adjacency(APP, LIVE, LIVE_NOW)
    assert second is not first and second is not None and second.pairs() == [("a", "b"), ("d", "a")]
    assert await net.adjacency(APP, LIVE, LIVE_NOW) is second


async def test_retention_drops_what_was_kept(stores: Stores) -> None:
    net = stores.layers[NET]
    await net.upsert_windows(minutes("a", "b", T0, 3))
    rng = TimeRange(T0, T0 + 10 * MINUTE)
    kept = await net.adjacency(APP, rng, T0 + DAY)
    assert kept is not None and kept.pairs() == [("a", "b")]
    await net.rollup(T0 + 9 * DAY)  # everything past retention
    gone = await net.adjacency(APP, rng, T0 + DAY)
    assert gone is not kept and gone is not None and gone.pairs() == []
