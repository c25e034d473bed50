"""Cassandra stopped and started under JanusGraph for real (docker/cassandra/dev.sh stop/start of
the shared test node), in one outage: a writer is storing a simulated hour of the network layer
when the node stops; meanwhile every query answers StoreUnavailable naming its layer. When the node
is back the writer resumes, and what it stored equals an uninterrupted run (nothing lost, nothing
doubled); the queries answer as before the outage."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest

from tests.cassandra.conftest import CassandraNode
from tests.janusgraph.test_faults import NOW, RETENTION, BackgroundWriter, _snapshot, _workload
from tests.store.contract import APP, DOWN, IPC, NET, TRACE, UP, win
from topology.catalog import ServiceInfo
from topology.store.base import StoreUnavailable
from topology.store.embedded import open_stores
from topology.store.janusgraph import open_janusgraph_stores
from topology.store.janusgraph_catalog import JanusGraphCatalogStore
from topology.store.janusgraph_layer import JanusGraphLayerStore
from topology.timewindow import MINUTE, TimeRange

pytestmark = [pytest.mark.cassandra, pytest.mark.slow]


async def _unavailable(call: Any) -> StoreUnavailable:
    with pytest.raises(StoreUnavailable) as err:
        await call
    return err.value


async def test_cassandra_down_during_reads_and_writes_then_back(
    cassandra: CassandraNode, janusgraph_cql_url: str, tmp_path: pathlib.Path
) -> None:
    batches = _workload()
    reference = open_stores(tmp_path / "reference", RETENTION)  # an uninterrupted run
    stores = await open_janusgraph_stores(janusgraph_cql_url, RETENTION, pool_size=2, require=True,
                                          write_retry_seconds=300.0)
    try:
        for layer in stores.layers.values():
            assert isinstance(layer, JanusGraphLayerStore)
            await layer.clear()
        assert isinstance(stores.catalog, JanusGraphCatalogStore)
        await stores.catalog.clear()
        for b in batches:
            await reference.layers[NET].upsert_windows(b)
        live = TimeRange(NOW - 15 * MINUTE, NOW)
        for layer in (IPC, TRACE):
            await stores.layers[layer].upsert_windows([win("a", "b", NOW - 5 * MINUTE, layer=layer)])
        await stores.catalog.upsert_services([ServiceInfo("a", tier=1)])
        before = {layer: await stores.layers[layer].neighbors(["a"], UP, APP, live, NOW)
                  for layer in (IPC, TRACE)}
        writing = BackgroundWriter(stores, batches)
        await writing.reach(15)
        await asyncio.to_thread(cassandra.stop)
        stopped_at = writing.done

        # JanusGraph retries a read for storage.read-time before it gives up: ask all at once
        layers = (NET, IPC, TRACE)
        errors = await asyncio.gather(
            *(_unavailable(stores.layers[lay].neighbors(["a"], UP, APP, live, NOW)) for lay in layers),
            *(_unavailable(stores.layers[lay].traverse(["b"], DOWN, 3, APP, live, NOW)) for lay in layers),
            _unavailable(stores.catalog.services(["a"])),
        )
        assert [e.layer for e in errors] == [*layers, *layers, None]
        assert writing.done <= stopped_at + 1 and not writing.task.done()  # the writer waits

        await asyncio.to_thread(cassandra.start)
        await asyncio.wait_for(writing.task, 600)
        assert writing.done == len(batches)
        got = await _snapshot(stores, NOW)
        assert got == await _snapshot(reference, NOW)
        assert got[0] == {MINUTE: sum(len(b) for b in batches)}  # each window once
        for layer in (IPC, TRACE):
            assert await stores.layers[layer].neighbors(["a"], UP, APP, live, NOW) == before[layer]
        assert (await stores.catalog.services(["a"]))["a"].tier == 1
    finally:
        await stores.close()
        await reference.close()
