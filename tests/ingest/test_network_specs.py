"""NETWORK stage specs 1, 2 and 3 fed from lists: hand-built flows and leases in, windows out."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from ingest.final import FinalSpec
from ingest.logic import Rejected
from ingest.network import NetworkStage1Spec, NetworkStage2Spec, edge_route
from ingest.record import Partition, Record
from ingest.topics import Topics
from tests.ingest.testing import Bus, Chain, TestingStage, last_windows
from tests.topology.stages.flowdata import encode_records
from topology.address import AddressBook
from topology.admit import reason_class
from topology.catalog import AddressKind, AddressLease
from topology.model import EdgePartial
from topology.stages.network import FlowAggregate, NetworkStage1, NetworkStage2
from topology.stages.network_stage1 import as_row, from_row
from topology.store.base import Stores
from topology.wire import flow

T = 1_800_000_000  # a minute boundary
TOPICS = Topics()
LEASES = [AddressLease("10.0.0.1", "web", AddressKind.WORKLOAD, T - 3600),
          AddressLease("10.0.0.2", "api", AddressKind.WORKLOAD, T - 3600),
          AddressLease("10.0.0.3", "billing", AddressKind.WORKLOAD, T - 3600)]


def client(start: float, remote: str = "10.0.0.2", sent: int = 100, received: int = 50) -> dict[str, Any]:
    return {"start": start, "end": start + 1, "app": "web", "role": "client", "local": "10.0.0.1:40000",
            "remote": f"{remote}:443", "sent": sent, "received": received}


def server(start: float, sent: int = 50, received: int = 100) -> dict[str, Any]:
    return {"start": start, "end": start + 1, "app": "api", "role": "server", "local": "10.0.0.2:443",
            "remote": "10.0.0.1:40000", "sent": sent, "received": received}


def publish_leases(bus: Bus) -> None:
    bus.produce_json(TOPICS.addresses, LEASES, lambda x: x.ip)


def flows(bus: Bus, host: str, records: list[dict[str, Any]], at: float) -> None:
    """One flow batch of ``host``, emitted by its agent and produced at ``at``."""
    bus.produce(TOPICS.flows, encode_records(records, host=host, emitted=at), host.encode(), int(at * 1000))



def network(stores: Stores) -> Chain:
    specs = [NetworkStage1Spec(TOPICS), NetworkStage2Spec(TOPICS), FinalSpec("network", TOPICS, stores)]
    chain = Chain(specs, wall=T)
    publish_leases(chain.bus)
    return chain


def app_windows(effects: list[Any]) -> dict[tuple[str, int, str, str], dict[str, Any]]:
    """The APP windows stored after ``effects``: bytes, connections and ports."""
    return {(layer, w, s, t): {"bytes": (v.bytes_sent, v.bytes_received), "connections": v.connections,
                               "ports": v.ports}
            for (layer, g, w, s, t), v in last_windows(effects).items() if g == "APP"}


WEB_API = {"bytes": (100, 50), "connections": 1, "ports": (443,)}


def test_both_ends_of_a_connection_become_one_window(stores: Stores) -> None:
    chain = network(stores)
    flows(chain.bus, "host-web", [client(T + 1)], T + 3)
    flows(chain.bus, "host-api", [server(T + 1)], T + 3)
    chain.cycle(T + 3)
    assert chain.effects == []  # the window is open, nothing new has been told early
    chain.drain(T + 120)
    assert app_windows(chain.effects) == {("NETWORK", T, "web", "api"): WEB_API}
    assert all(not st.dead for st in chain.stages)


def test_stage_1_emits_what_the_pure_stage_flushes_routed_for_stage_2() -> None:
    bus = Bus()
    publish_leases(bus)
    stage = TestingStage(NetworkStage1Spec(TOPICS), bus, wall=T)
    batches = [[client(T + 1), client(T + 2, "10.0.0.3")], [client(T + 12)], [client(T + 31)]]
    for i, records in enumerate(batches):
        flows(bus, "host-web", records, T + 3 + 15 * i)
    stage.step()
    pure = NetworkStage1(10)
    for records in batches:
        pure.add(flow.decode(encode_records(records, host="host-web")))
    want = list(pure.flush(T + 32 - 5))  # the clock is the latest end, T + 32
    assert [FlowAggregate(*from_row(e.item)) for e in stage.emitted] == want  # sent as rows
    route = NetworkStage2(AddressBook(LEASES)).route_key
    assert [e.key for e in stage.emitted] == [route(a) for a in want]
    assert {e.key for e in stage.emitted} == {"api", "billing"}  # the app the traffic goes into


def test_stage_2_emits_what_the_pure_stage_gives_for_the_same_aggregates() -> None:
    chain = Chain([NetworkStage1Spec(TOPICS), NetworkStage2Spec(TOPICS)], wall=T)
    publish_leases(chain.bus)
    flows(chain.bus, "host-web", [client(T + 1), client(T + 5, "10.0.0.3")], T + 3)
    flows(chain.bus, "host-api", [server(T + 1)], T + 3)
    flows(chain.bus, "host-web", [client(T + 70)], T + 72)  # closes the first minute upstream
    chain.cycle(T + 72).drain(T + 100)
    aggregates = [FlowAggregate(*from_row(e.item)) for e in chain[0].emitted]
    pure = NetworkStage2(AddressBook(LEASES), 60, 120)
    pure.add(aggregates)
    want = sorted(json.dumps(p.to_dict(), sort_keys=True) for p in pure.flush(T + 95))
    got = [EdgePartial.from_dict(e.item) for e in chain[1].emitted]
    assert sorted(json.dumps(p.to_dict(), sort_keys=True) for p in got) == want
    assert [e.key for e in chain[1].emitted] == [edge_route(p) for p in got]


def test_bad_flow_records_are_cut_out_and_dead_lettered_and_the_rest_goes_on(stores: Stores) -> None:
    chain = network(stores)
    year_2100 = 4_102_444_800
    flows(chain.bus, "host-web", [client(T + 1), client(year_2100), client(T + 2, sent=7)], T + 3)
    chain.bus.produce(TOPICS.flows, b"", b"host-web", (T + 3) * 1000)  # empty
    chain.bus.produce(TOPICS.flows, b"not a flow batch", b"host-web", (T + 3) * 1000)
    chain.cycle(T + 3).drain(T + 120)
    dead = chain[0].dead
    assert [(d["source"]["offset"], reason_class(d["reason"])) for d in dead] == [
        (0, "timestamp"), (1, "empty"), (2, "decode")]
    cut = flow.decode(base64.b64decode(dead[0]["payload_b64"]))
    assert [int(r["start_ms"]) for r in cut.records] == [year_2100 * 1000]  # only the bad record
    assert app_windows(chain.effects)[("NETWORK", T, "web", "api")]["bytes"] == (107, 100)


def test_a_new_edge_is_written_while_its_window_is_open_and_replaced_by_the_complete_one(
        stores: Stores) -> None:
    chain = network(stores)
    flows(chain.bus, "host-web", [client(T + 1)], T + 3)
    chain.cycle(T + 3, early=True)
    chain.cycle(T + 4, early=True)
    chain.cycle(T + 5, early=True)
    early = chain.effects[:]
    assert app_windows(early) == {("NETWORK", T, "web", "api"): WEB_API}
    assert chain[2].counters()["provisional_emitted"] >= 1 and chain[2].counters()["windows_emitted"] == 0
    flows(chain.bus, "host-web", [client(T + 20, sent=11)], T + 22)
    chain.cycle(T + 22).drain(T + 120)
    assert app_windows(chain.effects)[("NETWORK", T, "web", "api")]["bytes"] == (111, 100)


def test_a_vpc_flow_log_becomes_an_edge(stores: Stores) -> None:
    chain = network(stores)
    line = f"2 123456789012 eni-0a1 10.0.0.1 10.0.0.2 40001 443 6 10 8400 {T + 1} {T + 6} ACCEPT OK"
    chain.bus.produce(TOPICS.vpcflows, line.encode(), None, (T + 7) * 1000)
    chain.cycle(T + 7).drain(T + 120)
    windows = app_windows(chain.effects)
    assert list(windows) == [("NETWORK", T, "web", "api")]
    assert windows[("NETWORK", T, "web", "api")]["bytes"] == (8400, 0)


def test_workers_restarted_from_their_checkpoints_count_everything_once(stores: Stores) -> None:
    def run(restart: bool) -> dict[Any, Any]:
        chain = network(stores)
        for i in range(6):
            flows(chain.bus, "host-web", [client(T + 10 * i + 1, sent=i + 1)], T + 10 * i + 3)
            flows(chain.bus, "host-api", [server(T + 10 * i + 1, received=i + 1)], T + 10 * i + 3)
            if restart and i in (2, 4):  # polled but not committed, then the owner changes
                for st in chain.stages:
                    st.wall = T + 10 * i + 3
                    st.poll(early=True)
                    st.restart()
            chain.cycle(T + 10 * i + 3, early=True, save=True)
        chain.drain(T + 200)
        return app_windows(chain.effects)

    once = run(restart=False)
    assert once[("NETWORK", T, "web", "api")]["bytes"] == (21, 300)
    assert run(restart=True) == once


def test_leases_around_unattributed_traffic_reach_the_catalog_store(stores: Stores) -> None:
    import asyncio

    chain = network(stores)
    before = AddressLease("10.0.0.9", "old-app", AddressKind.WORKLOAD, T - 3600, T - 60, "old-app-v1")
    chain.bus.produce_json(TOPICS.addresses, [before], lambda x: x.ip)
    flows(chain.bus, "host-web", [client(T + 1, "10.0.0.9")], T + 3)
    chain.drain(T + 120)
    windows = app_windows(chain.effects)
    assert ("NETWORK", T, "web", "ip:10.0.0.9") in windows  # not given to old-app
    assert not any(t == "old-app" for (_, _, _, t) in windows)
    assert [e for e in chain.effects if isinstance(e, AddressLease)] == [before]  # told to stage 3

    async def written() -> dict[str, list[AddressLease]]:
        await FinalSpec("network", TOPICS, stores).write([before])
        return await stores.catalog.peer_leases(["10.0.0.9"])

    assert asyncio.run(written()) == {"10.0.0.9": [before]}


def test_stage_2_reads_aggregates_as_rows_or_objects_and_rejects_bad_rows_with_a_reason() -> None:
    a = FlowAggregate(T, 10, "web", "web-prod", flow.ROLE_CLIENT, "10.0.0.2", 443, 6, 2, 300, 100,
                      (T + 1) * 1000, (T + 2) * 1000, (T + 3) * 1000)
    row = list(as_row(a))
    assert from_row(json.loads(json.dumps(row))) == as_row(a)
    bad = {"short": row[:-1], "bool count": [*row[:8], True, *row[9:]], "role 3": [*row[:4], 3, *row[5:]],
           "port": [*row[:6], 70000, *row[7:]], "app not text": [*row[:2], 7, *row[3:]],
           "times": [*row[:11], (T + 9) * 1000, *row[12:]]}
    for value in bad.values():
        with pytest.raises(ValueError):
            from_row(value)
    spec = NetworkStage2Spec(TOPICS)
    for lease in LEASES:
        spec.addresses.add(lease)
    record = Record(TOPICS.stage_output("network", 1), 0, 0, None, b"", 0, ())
    outputs = []
    for item in (row, a.to_dict()):  # rows from stage 1, objects from older workers
        logic = spec.new_partition(Partition(record.topic, 0), None)
        assert logic.add(record, [item], T).items == 1
        outputs.append([e.item for e in logic.flush(T + 100, True)])
    assert outputs[0] == outputs[1] and outputs[0]
    with pytest.raises(Rejected, match="role"):
        logic.add(record, [bad["role 3"]], T)
