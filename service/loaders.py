"""Per-request DataLoaders: every look-up a query makes for many services becomes one store call.

Created afresh for every request (never shared: they cache). Resolvers ``await loader.load(name)``;
all loads issued in the same tick are sent to the store together.

* ``catalog``: name -> ServiceInfo | None (``CatalogStore.services``)
* ``nodes``: name -> NodeInfo | None (``CatalogStore.known_nodes``, the registry of nodes seen in traffic)
* ``health``: (name, at) -> HealthStatus | None (``CatalogStore.health``, one call per distinct ``at``)
* ``known``: name -> bool, "in the catalog or seen in any layer": the catalog and the node registry
  asked together, once for the whole batch, and their answers kept for the two loaders above, so an
  ``_entities`` call for many names costs one ``services`` and one ``known_nodes`` call in all.
  Names neither knows are then looked up in the layer stores themselves (one ``nodes`` call per
  layer for all of them), in case the registry lags behind a layer; a layer that fails is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiodataloader import DataLoader

from topology.catalog import HealthStatus, ServiceInfo
from topology.model import Layer, NodeInfo
from topology.store.base import CatalogStore, LayerStore

__all__ = ["Loaders"]


class Loaders:
    def __init__(self, catalog: CatalogStore, layers: Mapping[Layer, LayerStore] | None = None) -> None:
        self._catalog = catalog
        self._layers = dict(layers or {})
        self._catalog_cache: dict[str, Any] = {}
        self._nodes_cache: dict[str, Any] = {}
        self.catalog: DataLoader[str, ServiceInfo | None] = DataLoader(
            self._load_catalog, cache_map=self._catalog_cache
        )
        self.nodes: DataLoader[str, NodeInfo | None] = DataLoader(
            self._load_nodes, cache_map=self._nodes_cache
        )
        self.health: DataLoader[tuple[str, float], HealthStatus | None] = DataLoader(self._load_health)
        self.known: DataLoader[str, bool] = DataLoader(self._load_known)

    async def _load_catalog(self, names: Sequence[str]) -> list[ServiceInfo | None]:
        found = await self._catalog.services(list(names))
        return [found.get(n) for n in names]

    async def _load_nodes(self, names: Sequence[str]) -> list[NodeInfo | None]:
        found = await self._catalog.known_nodes(list(names))
        return [found.get(n) for n in names]

    async def _load_health(self, keys: Sequence[tuple[str, float]]) -> list[HealthStatus | None]:
        by_time: dict[float, list[str]] = {}
        for name, at in keys:
            by_time.setdefault(at, []).append(name)
        times = list(by_time)
        answers = await asyncio.gather(*(self._catalog.health(by_time[t], t) for t in times))
        found: dict[tuple[str, float], HealthStatus] = {}
        for t, answer in zip(times, answers, strict=True):
            for name, status in answer.items():
                found[(name, t)] = status
        return [found.get(k) for k in keys]

    async def _load_known(self, names: Sequence[str]) -> list[bool]:
        missing_infos = [n for n in names if n not in self._catalog_cache]
        missing_nodes = [n for n in names if n not in self._nodes_cache]
        infos: dict[str, ServiceInfo] = {}
        nodes: dict[str, NodeInfo] = {}
        if missing_infos and missing_nodes:
            infos, nodes = await asyncio.gather(
                self._catalog.services(missing_infos), self._catalog.known_nodes(missing_nodes)
            )
        elif missing_infos:
            infos = await self._catalog.services(missing_infos)
        elif missing_nodes:
            nodes = await self._catalog.known_nodes(missing_nodes)
        unseen = [n for n in missing_nodes if n not in nodes and n not in infos]
        if unseen and self._layers:
            answers = await asyncio.gather(*(s.nodes(unseen) for s in self._layers.values()),
                                           return_exceptions=True)
            for answer in answers:
                if isinstance(answer, BaseException):
                    continue  # a layer that cannot answer does not know the name
                for name, node in answer.items():
                    nodes.setdefault(name, node)
        for n in missing_infos:
            self.catalog.prime(n, infos.get(n))
        for n in missing_nodes:
            self.nodes.prime(n, nodes.get(n))
        out = []
        for n in names:
            info = await self.catalog.load(n)
            node = await self.nodes.load(n)
            out.append(info is not None or node is not None)
        return out
