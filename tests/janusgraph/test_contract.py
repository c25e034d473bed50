"""The store contract suite against the real JanusGraph Server, with the same expectations as the
embedded store. Each test starts from empty graphs (the factory clears all four)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.store.contract import StoreContract, StoresFactory
from topology.store.base import Stores
from topology.store.janusgraph import open_janusgraph_stores
from topology.store.janusgraph_catalog import JanusGraphCatalogStore
from topology.store.janusgraph_layer import JanusGraphLayerStore
from topology.timewindow import Retention

pytestmark = pytest.mark.janusgraph


class JanusGraphFactory(StoresFactory):
    # The server keeps the data; "reopen" = new store objects (new pools, empty caches) on it.
    supports_reopen = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: list[Stores] = []
        self.retention = Retention()

    async def fresh(self, retention: Retention | None = None) -> Stores:
        self.retention = retention or Retention()
        stores = await open_janusgraph_stores(self.url, self.retention, pool_size=2, require=True)
        for layer in stores.layers.values():
            assert isinstance(layer, JanusGraphLayerStore)
            await layer.clear()
        assert isinstance(stores.catalog, JanusGraphCatalogStore)
        await stores.catalog.clear()
        self.opened.append(stores)
        return stores

    async def reopen(self) -> Stores:
        await self.opened[-1].close()
        stores = await open_janusgraph_stores(self.url, self.retention, pool_size=2, require=True)
        self.opened.append(stores)
        return stores

    async def close(self) -> None:
        for s in self.opened:
            await s.close()


class TestJanusGraphStore(StoreContract):
    @pytest.fixture
    async def stores_factory(self, janusgraph_url: str) -> AsyncIterator[StoresFactory]:
        factory = JanusGraphFactory(janusgraph_url)
        yield factory
        await factory.close()
