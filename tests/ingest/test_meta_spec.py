"""The meta spec fed from lists: catalog entries and health events to the catalog store, leases checked."""

from __future__ import annotations

from ingest.meta import MetaSpec
from ingest.topics import Topics
from tests.ingest.testing import Bus, TestingStage
from topology.admit import reason_class
from topology.catalog import AddressKind, AddressLease, HealthEvent, HealthState, ServiceInfo
from topology.change import ChangeEvent, ChangeKind
from topology.store.base import Stores

T = 1_800_000_000
TOPICS = Topics()



async def test_catalog_and_health_reach_the_store_and_leases_are_only_counted(stores: Stores) -> None:
    bus = Bus(2)
    stage = TestingStage(MetaSpec(TOPICS, stores), bus, wall=T)
    old, new = ServiceInfo("api", tier=2), ServiceInfo("api", tier=1, domain="payments")
    bus.produce_json(TOPICS.catalog, [old, new, ServiceInfo("web")], lambda i: i.name, T * 1000)
    bus.produce(TOPICS.catalog, None, b"gone", T * 1000)  # a compaction tombstone: nothing
    events = [HealthEvent("api", HealthState.UNHEALTHY, T - 5),
              HealthEvent("api", HealthState.HEALTHY, T - 1)]
    bus.produce_json(TOPICS.health, events, lambda e: e.service, T * 1000)
    bus.produce_json(TOPICS.addresses, [AddressLease("10.0.0.1", "web", AddressKind.WORKLOAD, T - 60)],
                     lambda x: x.ip, T * 1000)
    stage.step()
    assert sorted(stage.effects, key=repr) == sorted([old, new, ServiceInfo("web"), *events], key=repr)
    assert stage.counters() == {"records": 6, "leases": 1}
    assert await stage.spec.write(stage.effects) == 5
    infos = await stores.catalog.services(["api", "web"])
    assert infos["api"] == new  # the latest entry of a name wins, as on the compacted topic
    health = await stores.catalog.health(["api"], T)
    assert health["api"].status is HealthState.HEALTHY


def test_bad_records_of_every_meta_topic_are_dead_lettered(stores: Stores) -> None:
    bus = Bus(1)
    stage = TestingStage(MetaSpec(TOPICS, stores), bus, wall=T)
    bus.produce(TOPICS.catalog, b"{not json", b"x", T * 1000)
    bus.produce(TOPICS.health, b'{"service": "api"}', b"api", T * 1000)
    bus.produce(TOPICS.addresses, b'{"ip": "10.0.0.1", "owner": "web", "kind": "WORKLOAD", "start": NaN}',
                b"10.0.0.1", T * 1000)
    stage.step()
    assert sorted((d["source"]["topic"], reason_class(d["reason"])) for d in stage.dead) == [
        (TOPICS.addresses, "timestamp"), (TOPICS.catalog, "decode"), (TOPICS.health, "schema")]
    assert stage.effects == []


async def test_change_events_reach_the_store_and_bad_ones_are_dead_lettered(stores: Stores) -> None:
    bus = Bus(1)
    stage = TestingStage(MetaSpec(TOPICS, stores), bus, wall=T)
    deploy = ChangeEvent("api", ChangeKind.DEPLOY, T - 30, "deployed v7", "v7", "ci")
    bus.produce_json(TOPICS.changes, [deploy, ChangeEvent("api", ChangeKind.CONFIG, T - 10)],
                     lambda e: e.service, T * 1000)
    bus.produce(TOPICS.changes, b'{"service": "api", "kind": "REBOOT", "at": 1800000000}', b"api", T * 1000)
    stage.step()
    assert [reason_class(d["reason"]) for d in stage.dead] == ["schema"]
    assert await stage.spec.write(stage.effects) == 2
    got = await stores.catalog.changes(["api"], T - 60, T, 10)
    assert [e.kind for e in got] == [ChangeKind.CONFIG, ChangeKind.DEPLOY] and got[1] == deploy
