"""Each layer's data lives in its own keyspace only: written through the JanusGraph stores, looked
for in Cassandra's tables over CQL."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.cassandra.conftest import LAYER_KEYSPACES, CassandraNode
from tests.store.contract import APP, win
from topology.catalog import ServiceInfo
from topology.model import Layer
from topology.store.janusgraph import open_janusgraph_stores
from topology.store.janusgraph_catalog import JanusGraphCatalogStore
from topology.store.janusgraph_layer import JanusGraphLayerStore
from topology.timewindow import MINUTE, Retention, TimeRange

pytestmark = pytest.mark.cassandra


def _blobs(cql: Any, keyspace: str) -> bytes:
    """Every key, column and value of every table of ``keyspace``, concatenated (JanusGraph's
    tables are all (key, column1, value) blobs)."""
    tables = [r.table_name for r in cql.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,))]
    assert "edgestore" in tables and "graphindex" in tables, tables
    out = bytearray()
    for table in tables:
        for row in cql.execute(f'SELECT * FROM "{keyspace}"."{table}"'):
            for v in row:
                if isinstance(v, bytes | bytearray):
                    out += v
                    out += b"\0"
    return bytes(out)


async def test_each_layer_is_stored_in_its_own_keyspace_only(
    cassandra: CassandraNode, janusgraph_cql_url: str, cql: Any
) -> None:
    tag = f"sep{int(time.time() * 1000) % 10**9}"
    now = time.time()
    start = int(now) // MINUTE * MINUTE - 5 * MINUTE
    stores = await open_janusgraph_stores(janusgraph_cql_url, Retention(), pool_size=2, require=True)
    # JanusGraph writes a short ASCII string one byte a character with the last byte's high bit set:
    # a name's bytes but the last are found as they are.
    marks = {layer.value.lower(): f"{tag}-only-in-{layer.value.lower()}-src" for layer in Layer}
    marks["catalog"] = f"{tag}-only-in-catalog-svc"
    try:
        for layer in Layer:
            store = stores.layers[layer]
            assert isinstance(store, JanusGraphLayerStore)
            await store.clear()
            await store.upsert_windows(
                [win(marks[layer.value.lower()], f"{tag}-dst", start, layer=layer)])
        assert isinstance(stores.catalog, JanusGraphCatalogStore)
        await stores.catalog.clear()
        await stores.catalog.upsert_services([ServiceInfo(marks["catalog"], tier=2)])
        # what was written answers through the stores...
        live = TimeRange(now - 15 * MINUTE, now)
        for layer in Layer:
            got = await stores.layers[layer].edges(APP, live, now)
            assert [(e.key.source, e.key.target) for e in got] == [(marks[layer.value.lower()], f"{tag}-dst")]
    finally:
        await stores.close()

    # ... and sits in the keyspace of its layer and in no other (the JanusGraph server has
    # cache.db-cache=false and committed every write: the rows are in Cassandra now)
    blobs = {name: _blobs(cql, ks) for name, ks in LAYER_KEYSPACES.items()}
    for name, mark in marks.items():
        holders = sorted(ks for ks, blob in blobs.items() if mark[:-1].encode() in blob)
        assert holders == [name], (mark, holders)
    # the one name every layer shares is in the three layer keyspaces, not in the catalog's
    shared = f"{tag}-dst"[:-1].encode()
    assert sorted(ks for ks, blob in blobs.items() if shared in blob) == ["ipc", "network", "trace"]


def test_keyspaces_replication_and_only_ours(cassandra: CassandraNode, janusgraph_cql_url: str,
                                            cql: Any) -> None:
    rows = {r.keyspace_name: dict(r.replication) for r in cql.execute(
        "SELECT keyspace_name, replication FROM system_schema.keyspaces")}
    ours = {k: v for k, v in rows.items() if k.startswith("topology_")}
    assert set(ours) == set(LAYER_KEYSPACES.values())
    for replication in ours.values():  # one node: SimpleStrategy, one copy (README: production)
        assert replication["class"].endswith("SimpleStrategy") and replication["replication_factor"] == "1"
