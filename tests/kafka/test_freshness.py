"""Freshness of the Kafka path: a new connection's edge is stored while its 60 s window is still open
(early emission at stages 1 and 2, provisional windows at stage 3), and the complete window that
replaces it when the window closes holds everything, early and late, once."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from ingest.publisher import lease_key
from tests.kafka.harness import InProcess, prefixed_topics
from tests.topology.stages.flowdata import encode_records
from topology.catalog import AddressKind, AddressLease
from topology.model import Granularity, Layer
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

NETWORK = [(1, "network"), (2, "network"), (3, "network")]


def _client(start: float, remote: str, connections: int) -> dict[str, Any]:
    return {"start": start, "end": start + 1, "app": "web", "cluster": "web-prod", "role": "client",
            "local": "10.3.0.1:40000", "remote": remote, "sent": 100 * connections, "received": 10,
            "connections": connections}


async def _stored(stores: Stores, w: int) -> dict[tuple[str, str], Any]:
    """APP edges stored for the minute window ``w``: (source, target) -> stats."""
    es = await stores.layers[Layer.NETWORK].edges(Granularity.APP, TimeRange(w, w + 60), w + 60)
    return {(e.key.source, e.key.target): e.stats for e in es}


async def _until_stored(stores: Stores, w: int, pair: tuple[str, str], limit: float = 60.0) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = await _stored(stores, w)
        if pair in got:
            return got[pair]
        await asyncio.sleep(0.2)
    raise AssertionError(f"edge {pair} was not stored within {limit}s")


def _latest_clock(run: InProcess) -> float:
    """The most advanced event-time clock of any partition of any worker."""
    return max((ps.clock.now for w in run.workers for ps in w.parts.values()), default=-math.inf)


async def test_a_new_direct_edge_is_stored_while_its_window_is_still_open(
        kafka_bootstrap: str, topic_label: str, tmp_path: Path) -> None:
    now = time.time()
    # A minute window that starts two minutes from now: event time is what the records say, and no
    # clock can reach this window's end (idle partitions follow the wall clock, never past it) until
    # the closing records below are published.
    w = int(now) - int(now) % 60 + 120
    leases = [AddressLease("10.3.0.1", "web", AddressKind.WORKLOAD, now - 3600, None, "web-prod"),
              AddressLease("10.3.0.2", "api", AddressKind.WORKLOAD, now - 3600, None, "api-prod"),
              AddressLease("10.3.9.9", "orders-db", AddressKind.DATABASE, now - 3600)]
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        stores = open_stores(tmp_path / "store")
        try:
            for lease in leases:
                value = json.dumps(lease.to_dict()).encode()
                await producer.send(topics.addresses, value, key=lease_key(lease))
            await producer.flush()
            async with InProcess(kafka_bootstrap, topics, stores, stages=NETWORK, meta=False,
                                 early_interval=0.5) as run:
                # 1. a connection web -> api never seen before
                first = encode_records([_client(w + 1, "10.3.0.2:443", 1), _client(w + 2, "10.3.0.2:443", 2)])
                await producer.send_and_wait(topics.flows, first, partition=0)
                stats = await _until_stored(stores, w, ("web", "api"))
                # ... visible while no worker's clock has reached the end of its window: provisional
                assert _latest_clock(run) < w + 60
                final = run.worker(3, "network").counters()
                assert final["windows_emitted"] == 0 and final["provisional_emitted"] >= 1
                assert stats.connections == 3 and stats.bytes_sent == 300
                # 2. more of the same connection (a known key: it waits in stage 1 for its 10 s window
                # to close) and a new one to a database (emitted early)
                second = encode_records([_client(w + 5, "10.3.0.2:443", 4),
                                         _client(w + 6, "10.3.9.9:5432", 2)])
                await producer.send_and_wait(topics.flows, second, partition=0)
                db = await _until_stored(stores, w, ("web", "orders-db"))
                assert db.connections == 2 and _latest_clock(run) < w + 60
                assert (await _stored(stores, w))[("web", "api")].connections == 3  # the rest comes at close
                assert run.worker(1, "network").counters()["early_aggregates"] >= 2
                # 3. every input partition moves past the window: it closes and replaces what was stored
                later = w + 180
                for p in (0, 1):
                    batch = encode_records([_client(later + p, "10.3.0.2:443", 1)], host=f"h{p}")
                    await producer.send(topics.flows, batch, partition=p)
                    line = (f"2 123456789012 eni-{p} 10.3.0.1 10.3.0.2 4100{p} 443 6 1 60 {later} "
                            f"{later + 1} ACCEPT OK")
                    await producer.send(topics.vpcflows, line.encode(), partition=p)
                await producer.flush()
                await run.wait_clocks(w + 75, [(3, "network")])
                await run.wait_written()
                closed = run.worker(3, "network").counters()
                dropped = {k: v for wk in run.workers for k, v in wk.counters().items() if "dropped" in k}
            stored = await _stored(stores, w)
            assert set(stored) == {("web", "api"), ("web", "orders-db")}
            assert stored[("web", "api")].connections == 7 and stored[("web", "api")].bytes_sent == 700
            assert stored[("web", "orders-db")].connections == 2
            assert closed["windows_emitted"] >= 2
            assert not any(dropped.values()), dropped
        finally:
            await producer.stop()
            await stores.close()
