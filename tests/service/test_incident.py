"""The incident questions over GraphQL, on the hand-built fleet (tests/service/fleet.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.service.conftest import Client
from tests.service.fleet import NOW, PAST
from topology.change import ChangeEvent, ChangeKind
from topology.store.base import Stores


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


DIFF = """query($name: String, $from: DateTime!, $first: Int, $after: String) {
  diff(name: $name, from: $from, window: "15m", first: $first, after: $after) {
    from to window service { name }
    added { source target layers after { layers } }
    removed { source target layers before { source } }
    changed { source target metrics { layer metric before after } }
    services changes { service kind version }
    pageInfo { hasNextPage endCursor } layers failedLayers { layer }
  }
}"""


async def test_diff_from_two_hours_ago_shows_the_path_that_came_and_the_edge_that_went(
    client: Client, stores: Stores
) -> None:
    await stores.catalog.record_changes([ChangeEvent("api", ChangeKind.DEPLOY, NOW - 3600, "v9", "v9"),
                                         ChangeEvent("payments", ChangeKind.CONFIG, NOW - 60)])
    d = (await client.data(DIFF, {"name": "api", "from": iso(PAST + 60)}))["diff"]
    assert (d["from"], d["to"], d["window"]) == (iso(PAST + 60), iso(NOW), 900.0)
    assert [(e["source"], e["target"]) for e in d["removed"]] == [("api", "legacy")]
    assert d["removed"][0]["before"] == {"source": "api"} and d["removed"][0]["layers"] == ["NETWORK"]
    added = {(e["source"], e["target"]): e["layers"] for e in d["added"]}
    assert added[("api", "orders")] == ["NETWORK", "IPC", "TRACE"]
    assert added[("orders", "payments")] == ["IPC"] and ("payments", "ledger") in added
    assert d["changed"] == []
    assert "legacy" in d["services"] and "ledger" in d["services"]
    assert d["changes"] == [{"service": "payments", "kind": "CONFIG", "version": None},
                            {"service": "api", "kind": "DEPLOY", "version": "v9"}]
    assert d["failedLayers"] == [] and d["layers"] == ["NETWORK", "IPC", "TRACE"]


async def test_diff_of_the_whole_graph_pages_and_an_unknown_name_is_null(client: Client) -> None:
    first = (await client.data(DIFF, {"from": iso(PAST + 60), "first": 3}))["diff"]
    assert first["service"] is None and first["pageInfo"]["hasNextPage"]
    keys = [(e["source"], e["target"]) for e in first["added"] + first["removed"]]
    assert len(keys) == 3
    rest = (await client.data(DIFF, {"from": iso(PAST + 60), "first": 100,
                                     "after": first["pageInfo"]["endCursor"]}))["diff"]
    more = [(e["source"], e["target"]) for e in rest["added"] + rest["removed"]]
    assert not set(keys) & set(more) and not rest["pageInfo"]["hasNextPage"]
    assert ("api", "legacy") in keys + more and len(keys + more) == 8  # 7 live edges came, 1 went
    out = await client.query(DIFF, {"name": "apii", "from": "now-2h"})
    assert out["data"]["diff"] is None
    assert out["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert out["errors"][0]["extensions"]["suggestions"][0] == "api"
    bad = await client.query(DIFF, {"name": "api", "from": iso(NOW + 60)})
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


ROOT_CAUSE = """query($name: String!) { rootCause(name: $name, window: "10m") {
  verdict examined at window service { name }
  candidates { rank score path service { name owner { team oncall } }
               evidence { kind layer metric baseline current detail } changes { kind version } }
  layers failedLayers { layer } } }"""


async def test_root_cause_over_graphql_names_the_source_and_its_on_call(
    client: Client, stores: Stores
) -> None:
    """The fleet's windows are all in the live window (no baseline): orders -> payments fails now."""
    from tests.service.fleet import LIVE, _w
    from topology.model import Layer
    from topology.stats import EdgeStats

    failing = EdgeStats(first_seen=LIVE, last_seen=LIVE + 59, requests=500, errors=200)
    await stores.layers[Layer.IPC].upsert_windows([_w(Layer.IPC, "orders", "payments", stats=failing)])
    await stores.catalog.record_changes([ChangeEvent("payments", ChangeKind.DEPLOY, NOW - 900, "v3", "v3")])
    r = (await client.data(ROOT_CAUSE, {"name": "api"}))["rootCause"]
    assert (r["verdict"], r["service"]) == ("UPSTREAM", {"name": "api"})
    assert (r["window"], r["at"]) == (600.0, iso(NOW))
    top = r["candidates"][0]
    assert top["service"] == {"name": "payments", "owner": {"team": "payments", "oncall": None}}
    assert (top["rank"], top["path"]) == (1, ["api", "orders", "payments"])
    kinds = [e["kind"] for e in top["evidence"]]
    assert kinds == ["ERRORS", "DEPENDENCIES", "CHANGE"]
    errors = top["evidence"][0]
    assert (errors["layer"], errors["metric"], errors["baseline"], errors["current"]) == ("IPC", "ERROR_RATE",
                                                                                         None, 0.4)
    assert top["changes"] == [{"kind": "DEPLOY", "version": "v3"}]
    assert r["examined"] == 6 and r["failedLayers"] == []
    out = await client.query(ROOT_CAUSE, {"name": "payment"})
    assert out["data"]["rootCause"] is None and out["errors"][0]["extensions"]["suggestions"][0] == "payments"


async def test_tier_violations_over_graphql(client: Client) -> None:
    q = """{ tierViolations(tier: 0) { violations { service { name } serviceTier dependency { name tier }
             dependencyTier path pathLayers } pageInfo { hasNextPage } failedLayers { layer } } }"""
    got = (await client.data(q))["tierViolations"]
    pairs = [(v["service"]["name"], v["dependency"]["name"]) for v in got["violations"]]
    # edge-gateway (0) -> api (1) ...; payments (0) -> ledger (2); user is a virtual caller, not a dependency
    assert ("edge-gateway", "api") in pairs and ("payments", "ledger") in pairs
    assert ("edge-gateway", "orders-db") not in pairs  # a database has no tier of its own
    ledger = next(v for v in got["violations"] if v["service"]["name"] == "payments")
    assert (ledger["serviceTier"], ledger["dependencyTier"], ledger["path"], ledger["pathLayers"]) == (
        0, 2, ["payments", "ledger"], [["TRACE"]])
    deep = next(v for v in got["violations"] if (v["service"]["name"], v["dependency"]["name"]) ==
                ("edge-gateway", "ledger"))
    assert deep["path"] == ["edge-gateway", "api", "orders", "payments", "ledger"]
    assert deep["pathLayers"] == [["NETWORK", "IPC"], ["NETWORK", "IPC", "TRACE"], ["IPC"], ["TRACE"]]
    assert not got["pageInfo"]["hasNextPage"] and got["failedLayers"] == []


async def test_unknown_peers_over_graphql(client: Client, stores: Stores) -> None:
    from tests.service.fleet import LIVE, _w
    from topology.catalog import AddressKind, AddressLease
    from topology.model import Layer, NodeKind
    from topology.stats import EdgeStats

    seen = EdgeStats(first_seen=LIVE, last_seen=LIVE + 59, connections=4, bytes_sent=10, bytes_received=30,
                     ports=(9092,))
    await stores.layers[Layer.NETWORK].upsert_windows([
        _w(Layer.NETWORK, "orders", "ip:10.1.2.3", stats=seen, dst_kind=NodeKind.UNKNOWN)])
    q = """{ unknownPeers { peers { name address ports connections bytes firstSeen lastSeen
             talkedTo { workload { name } outbound connections bytes } } pageInfo { hasNextPage } } }"""
    got = (await client.data(q))["unknownPeers"]
    assert got["peers"] == [{"name": "ip:10.1.2.3", "address": "10.1.2.3", "ports": [9092], "connections": 4,
                             "bytes": 40, "firstSeen": iso(LIVE), "lastSeen": iso(LIVE + 59),
                             "talkedTo": [{"workload": {"name": "orders"}, "outbound": True, "connections": 4,
                                           "bytes": 40}]}]
    assert got["pageInfo"] == {"hasNextPage": False}
    # the leases around the unattributed traffic, as NETWORK stage 2 kept them: hints, not owners
    q = ("{ unknownPeers { peers { leaseBefore { owner kind cluster start end } "
         "leaseAfter { owner kind end } } } }")
    assert (await client.data(q))["unknownPeers"]["peers"] == [{"leaseBefore": None, "leaseAfter": None}]
    await stores.catalog.record_peer_leases([
        AddressLease("10.1.2.3", "kafka-old", AddressKind.MESSAGING, LIVE - 3600, LIVE - 60),
        AddressLease("10.1.2.3", "billing", AddressKind.WORKLOAD, LIVE + 120, None, "billing-v2")])
    [peer] = (await client.data(q))["unknownPeers"]["peers"]
    assert peer == {"leaseBefore": {"owner": "kafka-old", "kind": "MESSAGING", "cluster": None,
                                    "start": iso(LIVE - 3600), "end": iso(LIVE - 60)},
                    "leaseAfter": {"owner": "billing", "kind": "WORKLOAD", "end": None}}
