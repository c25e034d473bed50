"""The JanusGraph store: one graph per layer on a JanusGraph Server, plus the catalog graph.

The server (``docker/janusgraph``; ``make janusgraph`` locally, ``docker/compose.yaml`` on
ScyllaDB in production) hosts the graphs ``network``, ``ipc``, ``trace`` and ``catalog``, each with
its own storage (its own berkeleyje directory or Cassandra keyspace), exposed as the traversal
sources ``g_network``, ``g_ipc``, ``g_trace`` and ``g_catalog``. Each store has its own connection
pool, so the layers are independent objects that fail and recover independently and are queried
concurrently.

    stores = await open_janusgraph_stores("ws://127.0.0.1:18182/gremlin", Retention())

A ``wss://`` server with authentication takes an :class:`Endpoint` (URL, credentials, TLS context)
instead of the URL; ``StoreSettings.open`` makes it from the ``JANUSGRAPH_*`` settings.
"""

from __future__ import annotations

import asyncio
import logging

from topology.model import ALL_LAYERS, Layer
from topology.store.base import Stores, StoreUnavailable
from topology.store.janusgraph_catalog import JanusGraphCatalogStore
from topology.store.janusgraph_endpoint import Endpoint
from topology.store.janusgraph_layer import JanusGraphLayerStore
from topology.store.janusgraph_pool import GremlinPool
from topology.timewindow import Retention

log = logging.getLogger(__name__)

TRAVERSAL_SOURCES: dict[Layer, str] = {
    Layer.NETWORK: "g_network",
    Layer.IPC: "g_ipc",
    Layer.TRACE: "g_trace",
}
CATALOG_SOURCE = "g_catalog"


async def open_janusgraph_stores(
    url: Endpoint | str,
    retention: Retention,
    pool_size: int = 4,
    *,
    require: bool = False,
    write_retry_seconds: float = 120.0,
    request_timeout: float = 120.0,
) -> Stores:
    """Connect to the server and create schema and indexes where missing.

    A layer whose graph cannot be reached now is still returned: its calls raise
    :class:`StoreUnavailable` until the server answers (then the schema is checked on first use).
    With ``require=True`` an unreachable graph fails the call instead (also refused credentials or
    an untrusted certificate, which surface as :class:`StoreUnavailable` saying so).
    """
    endpoint = url if isinstance(url, Endpoint) else Endpoint(url)
    layers = {
        layer: JanusGraphLayerStore(
            GremlinPool(endpoint, TRAVERSAL_SOURCES[layer], layer, pool_size, request_timeout),
            layer,
            retention,
            write_retry_seconds=write_retry_seconds,
        )
        for layer in ALL_LAYERS
    }
    catalog = JanusGraphCatalogStore(GremlinPool(endpoint, CATALOG_SOURCE, None, pool_size, request_timeout),
                                     retention)
    results = await asyncio.gather(
        *(s.ensure_ready() for s in layers.values()), catalog.ensure_ready(), return_exceptions=True
    )
    for what, res in zip([*layers, "catalog"], results, strict=True):
        if isinstance(res, StoreUnavailable):
            if require:
                for s in layers.values():
                    await s.close()
                await catalog.close()
                raise res
            log.warning("JanusGraph %s not reachable yet: %s", getattr(what, "value", what), res)
        elif isinstance(res, BaseException):
            raise res
    return Stores(layers=layers, catalog=catalog)
