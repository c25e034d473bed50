"""The store contract against the embedded store, plus what only the embedded store does."""

from __future__ import annotations

import asyncio
import pathlib
import shutil
from collections.abc import AsyncIterator

import pytest

from tests.store.contract import (
    APP,
    DOWN,
    IPC,
    LIVE,
    LIVE_NOW,
    NET,
    UP,
    StoreContract,
    StoresFactory,
    minutes,
    pairs,
    win,
)
from topology.catalog import HealthEvent, HealthState, TraceSummary
from topology.model import Layer
from topology.store.base import Stores, StoreUnavailable
from topology.store.embedded import open_stores
from topology.store.embedded_catalog import HEALTH_IN_MEMORY, TRACES_PER_SERVICE
from topology.timewindow import MINUTE, Retention


class EmbeddedFactory(StoresFactory):
    supports_reopen = True

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.opened: list[Stores] = []
        self.dir = root
        self.retention = Retention()

    async def fresh(self, retention: Retention | None = None) -> Stores:
        self.dir = self.root / f"stores{len(self.opened)}"
        self.retention = retention or Retention()
        stores = open_stores(self.dir, self.retention)
        self.opened.append(stores)
        return stores

    async def reopen(self) -> Stores:
        await self.opened[-1].close()
        stores = open_stores(self.dir, self.retention)
        self.opened.append(stores)
        return stores

    async def close(self) -> None:
        for s in self.opened:
            await s.close()


class TestEmbeddedStore(StoreContract):
    @pytest.fixture
    async def stores_factory(self, tmp_path: pathlib.Path) -> AsyncIterator[StoresFactory]:
        factory = EmbeddedFactory(tmp_path)
        yield factory
        await factory.close()


@pytest.fixture
async def factory(tmp_path: pathlib.Path) -> AsyncIterator[EmbeddedFactory]:
    f = EmbeddedFactory(tmp_path)
    yield f
    await f.close()


async def test_one_database_file_per_layer_and_one_for_the_catalog(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    await stores.layers[NET].upsert_windows(minutes("a", "b", LIVE_NOW - 120, 1))
    names = {p.name for p in factory.dir.iterdir() if p.suffix == ".db"}
    assert names == {"network.db", "ipc.db", "trace.db", "catalog.db"}
    assert (factory.dir / "network.db-wal").exists()  # WAL mode


async def test_committed_writes_are_visible_to_a_second_process_without_close(
    factory: EmbeddedFactory,
) -> None:
    stores = await factory.fresh()
    await stores.layers[NET].upsert_windows(minutes("a", "b", LIVE_NOW - 300, 3))
    other = open_stores(factory.dir)  # as if the first process had crashed here
    factory.opened.append(other)
    [e] = await other.layers[NET].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
    assert e.stats.requests == 30


async def test_a_layer_file_cannot_be_opened_as_another_layer(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    await stores.close()
    shutil.copy(factory.dir / "network.db", factory.root / "ipc-copy.db")
    (factory.dir / "ipc.db").unlink()
    shutil.copy(factory.root / "ipc-copy.db", factory.dir / "ipc.db")
    with pytest.raises(ValueError, match="NETWORK"):
        open_stores(factory.dir)


async def test_a_closed_store_is_unavailable(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    await stores.close()
    with pytest.raises(StoreUnavailable) as err:
        await stores.layers[IPC].ping()
    assert err.value.layer is Layer.IPC
    with pytest.raises(StoreUnavailable):
        await stores.layers[NET].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
    with pytest.raises(StoreUnavailable):
        await stores.catalog.services(["a"])


async def test_one_string_is_not_a_list_of_names(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    with pytest.raises(ValueError):
        await stores.layers[NET].neighbors("abc", UP, APP, LIVE, LIVE_NOW)
    with pytest.raises(ValueError):
        await stores.catalog.services("abc")


async def test_readers_answer_during_a_long_write_and_see_all_of_it_or_none(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    net = stores.layers[NET]
    await net.upsert_windows([win("root", "a", LIVE_NOW - 120)])
    big = [win("a", f"t{i:05d}", LIVE_NOW - 120 - m * MINUTE) for i in range(4000) for m in range(10)]
    writing = asyncio.create_task(net.upsert_windows(big))
    seen: list[int] = []
    during = 0
    while not writing.done():
        t = await net.traverse(["root"], UP, 2, APP, LIVE, LIVE_NOW)
        seen.append(len(t.reached))
        during += not writing.done()
        await asyncio.sleep(0)
    await writing
    assert during > 0  # queries were answered while the write was in flight
    assert set(seen) <= {1, 4001}
    assert len((await net.traverse(["root"], UP, 2, APP, LIVE, LIVE_NOW)).reached) == 4001


async def test_trace_summaries_are_bounded_per_service(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    await stores.catalog.record_traces(
        [TraceSummary(f"{i:032x}", "a", "GET", float(i), 0.1, 2, False, ("a",)) for i in range(250)]
    )
    kept = await stores.catalog.recent_traces("a", 1000)
    assert [t.start for t in kept] == [float(i) for i in range(249, 249 - TRACES_PER_SERVICE, -1)]


async def test_old_health_events_are_answered_from_disk(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    n = HEALTH_IN_MEMORY + 50
    states = [HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY]
    await stores.catalog.record_health(
        [HealthEvent("s", states[i % 3], 10.0 * i, str(i)) for i in range(1, n)]
    )
    for at, want in ((15.0, "1"), (105.0, "10"), (10.0 * (n - 1) + 5, str(n - 1))):
        assert (await stores.catalog.health(["s"], at))["s"].reason == want
    assert await stores.catalog.health(["s"], 5.0) == {}
    reopened = await factory.reopen()
    assert (await reopened.catalog.health(["s"], 105.0))["s"].status is states[10 % 3]


async def test_neighbors_downstream_of_many_names(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    net = stores.layers[NET]
    await net.upsert_windows([win(f"c{i}", "hub", LIVE_NOW - 120) for i in range(300)])
    got = await net.neighbors(["hub"], DOWN, APP, LIVE, LIVE_NOW)
    assert pairs(got) == sorted((f"c{i}", "hub") for i in range(300))
