"""Simulator -> real Kafka topics (the real wire formats) -> the stage workers -> the embedded store,
checked against the simulator's ground truth and against the in-process pipeline's windows."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ingest.publisher import lease_key, publish_simulation
from service.app import create_app
from service.config import ServiceConfig
from tests.kafka.harness import (
    LAYERS,
    InProcess,
    app_edges,
    assert_same_windows,
    embedded_baseline,
    prefixed_topics,
    truth_pairs,
    windows,
)
from topology.catalog import AddressKind, AddressLease, HealthState
from topology.model import Granularity, Layer, NodeKind
from topology.store.base import ServiceFilter, Stores
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SERVICES = 30
MINUTES = 3.0


async def test_simulated_fleet_matches_ground_truth_and_the_in_process_pipeline(
        kafka_bootstrap: str, topic_label: str, tmp_path: Path) -> None:
    start = float(int(time.time()) - 240)
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        res = await publish_simulation(kafka_bootstrap, services=SERVICES, minutes=MINUTES, start=start,
                                       topics=topics, partitions=2)
        assert res["publish"]["flow_records"] > 1000 and res["publish"]["span_messages"] > 100
        stores = open_stores(tmp_path / "store")
        try:
            async with InProcess(kafka_bootstrap, topics, stores) as run:
                await run.wait_clocks(res["end"] + 80, [(3, layer) for layer in LAYERS])
                await run.wait_written()
                counters = {w.name: w.counters() for w in run.workers}
                scraped = generate_latest(run.worker(3, "trace").metrics.registry).decode()
            for layer in Layer:
                got = await app_edges(stores, layer, start, res["end"])
                assert got == truth_pairs(res["truth"], layer), layer
            # the TRACE stage-3 worker's service-graph counters (its /metrics) hold the calls of the
            # windows it wrote, once each: the truth's edges, with the stored request counts
            stored: dict[tuple[str, str], int] = {}
            for key, stats in (await windows(stores, [Layer.TRACE], start, res["end"])).items():
                if key[1] == Granularity.APP.value:
                    stored[(key[3], key[4])] = stored.get((key[3], key[4]), 0) + stats.requests
            calls = {(s.labels["client"], s.labels["server"]): s.value
                     for f in text_string_to_metric_families(scraped) for s in f.samples
                     if s.name == "traces_service_graph_request_total"}
            assert calls == stored and set(calls) == truth_pairs(res["truth"], Layer.TRACE)
            assert_same_windows(await windows(stores, list(Layer), start, res["end"]),
                                embedded_baseline(SERVICES, 42, start, MINUTES))
            # the meta worker filled the catalog; stage 3 registered nodes and trace summaries
            names = await stores.catalog.list_names(ServiceFilter(), Granularity.APP, 1000, None)
            infos = await stores.catalog.services(names)
            assert len(infos) == SERVICES
            health = await stores.catalog.health(list(infos), res["end"])
            assert {h.status for h in health.values()} <= set(HealthState) and len(health) == SERVICES
            some = sorted(infos)[0]
            nodes = await stores.catalog.known_nodes([some])
            assert nodes[some].kind is NodeKind.SERVICE and nodes[some].layers
            traced = [n for n in names if await stores.catalog.recent_traces(n, 1)]
            assert traced, "no trace summaries were recorded"
            # ... with their spans in the store of recent traces (Query.trace), through Kafka too
            recent = (await stores.catalog.recent_traces(traced[0], 1))[0]
            kept = await stores.catalog.trace(recent.trace_id)
            assert kept is not None and len(kept.kept_spans) == kept.spans == recent.spans
            # ... and the last hop: the merged graph over GraphQL equals the unified ground truth
            assert await graphql_edges(stores) == {(a, b) for a, b in res["truth"]["unified"]}
        finally:
            await stores.close()
    # nothing was rejected or dropped on the way
    assert all(c.get("late_dropped", 0) == 0 for c in counters.values()), counters


async def graphql_edges(stores: Stores) -> set[tuple[str, str]]:
    """Every edge of the merged three-layer graph, paged through ``Query.topology`` over HTTP (ASGI)."""
    app = create_app(stores, ServiceConfig.from_env({}))
    query = """query($after: String) { topology(layers: [NETWORK, IPC, TRACE], first: 500, after: $after) {
      edges { source target layers } pageInfo { hasNextPage endCursor } } }"""
    edges: set[tuple[str, str]] = set()
    after = None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        while True:
            body = (await c.post("/graphql", json={"query": query, "variables": {"after": after}})).json()
            assert "errors" not in body, body["errors"]
            page = body["data"]["topology"]
            edges |= {(e["source"], e["target"]) for e in page["edges"]}
            if not page["pageInfo"]["hasNextPage"]:
                return edges
            after = page["pageInfo"]["endCursor"]


async def test_unkeyed_span_messages_are_rekeyed_by_trace_id(kafka_bootstrap: str, topic_label: str,
                                                             tmp_path: Path) -> None:
    """Whole export requests without keys (partition_traces_by_id off) land on any partition; the
    spans of one trace still meet in one pairing worker."""
    start = float(int(time.time()) - 240)
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        res = await publish_simulation(kafka_bootstrap, services=SERVICES, minutes=MINUTES, start=start,
                                       topics=topics, partitions=2, traces_by_id=False)
        stores = open_stores(tmp_path / "store")
        try:
            trace = [(1, "trace"), (2, "trace"), (3, "trace")]
            async with InProcess(kafka_bootstrap, topics, stores, stages=trace, meta=False) as run:
                await run.wait_clocks(res["end"] + 80, [(3, "trace")])
                await run.wait_written()
                split = run.worker(1, "trace").counters()
            assert split["split"] > 0 and split["passed_through"] == 0
            got = await app_edges(stores, Layer.TRACE, start, res["end"])
            assert got == truth_pairs(res["truth"], Layer.TRACE)
            assert_same_windows(await windows(stores, [Layer.TRACE], start, res["end"]),
                                embedded_baseline(SERVICES, 42, start, MINUTES, layers=[Layer.TRACE]))
        finally:
            await stores.close()


async def test_vpc_flow_logs_in_default_and_custom_formats_become_edges(
        kafka_bootstrap: str, topic_label: str, tmp_path: Path) -> None:
    now = time.time()
    t = int(now) - 150
    leases = [
        AddressLease("10.1.0.1", "web", AddressKind.WORKLOAD, now - 3600, None, "web-prod"),
        AddressLease("10.1.0.2", "api", AddressKind.WORKLOAD, now - 3600, None, "api-prod"),
        AddressLease("10.1.0.3", "worker", AddressKind.WORKLOAD, now - 3600, None, "worker-prod"),
        AddressLease("10.1.9.9", "orders-db", AddressKind.DATABASE, now - 3600),
        AddressLease("10.1.5.5", "egress-nat", AddressKind.NAT_GATEWAY, now - 3600),
    ]
    default_lines = "\n".join(
        f"2 123456789012 eni-0a{i} 10.1.0.1 10.1.0.2 4{i:04d} 443 6 10 8400 {t + i} {t + i + 5} ACCEPT OK"
        for i in range(5))
    # v5-style custom format: the interface address is the NAT's, pkt-srcaddr is the real client
    custom = ("version interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action "
              "log-status tcp-flags pkt-srcaddr pkt-dstaddr flow-direction\n"
              + "\n".join(f"5 eni-0b{i} 10.1.5.5 10.1.9.9 5{i:04d} 5432 6 4 900 {t + i} {t + i + 3} "
                          "ACCEPT OK 2 10.1.0.3 10.1.9.9 egress" for i in range(3)))
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for lease in leases:
                value = json.dumps(lease.to_dict()).encode()
                await producer.send(topics.addresses, value, key=lease_key(lease))
            await producer.flush()
            await producer.send(topics.vpcflows, default_lines.encode())
            await producer.send(topics.vpcflows, custom.encode())
            await producer.flush()
        finally:
            await producer.stop()
        stores = open_stores(tmp_path / "store")
        try:
            net = [(1, "network"), (2, "network"), (3, "network")]
            async with InProcess(kafka_bootstrap, topics, stores, stages=net, meta=False) as run:
                await run.wait_clocks(t + 150, [(3, "network")])
                await run.wait_written()
            store = stores.layers[Layer.NETWORK]
            es = await store.edges(Granularity.APP, TimeRange(t - 60, t + 120), time.time())
            by_pair = {(e.key.source, e.key.target): e for e in es}
            assert set(by_pair) == {("web", "api"), ("worker", "orders-db")}
            assert by_pair[("web", "api")].stats.bytes_sent == 5 * 8400
            assert by_pair[("web", "api")].stats.ports == (443,)
            assert by_pair[("worker", "orders-db")].target_kind is NodeKind.DATABASE
            assert by_pair[("worker", "orders-db")].stats.connections == 3
        finally:
            await stores.close()
