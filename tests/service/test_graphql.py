"""The GraphQL API over HTTP, on the hand-built fleet (tests/service/fleet.py) in the real embedded store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.service.conftest import Client
from tests.service.fleet import LIVE, NOW, PAST
from topology.model import Layer, NodeKind
from topology.store.base import Stores


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


def deps(conn: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(e["node"]["service"]["name"], e["node"]["depth"], e["node"]["via"]) for e in conn["edges"]]


DEPS = "totalCount edges { cursor node { depth via service { name } } } pageInfo { hasNextPage endCursor }"


async def test_upstream_walks_several_hops_over_merged_layers(client: Client) -> None:
    d = await client.data(f'{{ service(name: "api") {{ upstream(depth: 3) {{ {DEPS} layers }} }} }}')
    up = d["service"]["upstream"]
    assert deps(up) == [("auth", 1, "api"), ("orders", 1, "api"), ("orders-db", 2, "orders"),
                        ("payments", 2, "orders"), ("ledger", 3, "payments")]
    assert up["totalCount"] == 5 and up["layers"] == ["NETWORK", "IPC", "TRACE"]


async def test_downstream_reaches_virtual_callers(client: Client) -> None:
    d = await client.data('{ service(name: "orders") { downstream(depth: 3) { edges { node { depth via '
                          'service { name kind virtual } } } } } }')
    nodes = [e["node"] for e in d["service"]["downstream"]["edges"]]
    assert [(n["service"]["name"], n["depth"], n["via"]) for n in nodes] == [
        ("api", 1, "orders"), ("edge-gateway", 2, "api"), ("user", 3, "edge-gateway")]
    assert nodes[2]["service"]["kind"] == "USER" and nodes[2]["service"]["virtual"] is True
    assert nodes[0]["service"]["virtual"] is False


EDGE = """edge { source target layers perLayer { layer protocol ports endpoints requests errors requestRate
  errorRate latencyP50 latencyP90 latencyP99 bytes bytesSent bytesReceived connections firstSeen lastSeen
  intermediaries exemplarTraceIds } }"""


async def test_each_layer_details_the_edge_side_by_side(client: Client) -> None:
    d = await client.data(f'{{ service(name: "api") {{ upstream {{ edges {{ node {{ service {{ name }} '
                          f'{EDGE} }} }} }} }} }}')
    edge = next(e["node"]["edge"] for e in d["service"]["upstream"]["edges"]
                if e["node"]["service"]["name"] == "orders")
    assert (edge["source"], edge["target"], edge["layers"]) == ("api", "orders", ["NETWORK", "IPC", "TRACE"])
    net, ipc, trc = edge["perLayer"]
    assert net["layer"] == "NETWORK" and net["protocol"] == "tcp" and net["ports"] == [8080]
    assert (net["bytes"], net["bytesSent"], net["bytesReceived"]) == (4000, 1000, 3000)
    assert net["connections"] == 12
    assert net["intermediaries"] == ["orders-lb"] and net["requestRate"] is None and net["latencyP99"] is None
    assert net["firstSeen"] == iso(LIVE) and net["lastSeen"] == iso(LIVE + 59)
    assert ipc["layer"] == "IPC" and ipc["protocol"] == "grpc"
    assert ipc["endpoints"] == ["orders.Orders/Get", "orders.Orders/List"]
    assert (ipc["requests"], ipc["errors"]) == (900, 9)
    assert ipc["requestRate"] == 1.0  # 900 requests over the 15-minute live window
    assert ipc["errorRate"] == 0.01
    # 890 calls of 3 ms and 10 of 200 ms: p99 is a slow one, p90 and p50 fast ones, each within 1.1%,
    # in milliseconds rounded to the microsecond
    assert abs(ipc["latencyP99"] - 200.0) <= 2.2 and abs(ipc["latencyP90"] - 3.0) <= 0.033
    assert abs(ipc["latencyP50"] - 3.0) <= 0.033
    assert all(round(ipc[f], 3) == ipc[f] for f in ("latencyP50", "latencyP90", "latencyP99"))
    assert trc["layer"] == "TRACE" and trc["exemplarTraceIds"] == ["0af7651916cd43dd8448eb211c80319c"]
    assert (trc["requests"], trc["errors"]) == (9, 1)


async def test_layers_argument_limits_the_union(client: Client) -> None:
    d = await client.data('{ service(name: "api") { upstream(depth: 3, layers: [IPC]) '
                          '{ layers edges { node { service { name } edge { layers } } } } } }')
    up = d["service"]["upstream"]
    assert [(e["node"]["service"]["name"], e["node"]["edge"]["layers"]) for e in up["edges"]] == [
        ("orders", ["IPC"]), ("payments", ["IPC"])]
    assert up["layers"] == ["IPC"]


async def test_a_tier_filter_hides_a_middle_node_but_returns_the_one_behind_it(client: Client) -> None:
    d = await client.data(f'{{ service(name: "api") {{ upstream(depth: 3, tier: [0, 2]) {{ {DEPS} }} }} }}')
    up = d["service"]["upstream"]
    # orders (tier 1) is not returned, but payments and ledger behind it are, with their real depth and via
    assert deps(up) == [("auth", 1, "api"), ("payments", 2, "orders"), ("ledger", 3, "payments")]
    assert up["totalCount"] == 3


async def test_domain_filter(client: Client) -> None:
    d = await client.data(f'{{ service(name: "edge-gateway") {{ upstream(depth: 5, domain: "payments") '
                          f'{{ {DEPS} }} }} }}')
    assert deps(d["service"]["upstream"]) == [("payments", 3, "orders"), ("ledger", 4, "payments")]


async def test_time_travel_shows_an_edge_that_is_no_longer_live(client: Client) -> None:
    q = '{ service(name: "api") { upstream(at: $at, window: $w) { edges { node { service { name } } } } } }'
    doc = "query($at: DateTime, $w: Duration) " + q
    live = await client.data(doc)
    names = [e["node"]["service"]["name"] for e in live["service"]["upstream"]["edges"]]
    assert names == ["auth", "orders"]
    for window in ("15m", 900, "PT15M"):
        past = await client.data(doc, {"at": iso(PAST + 60), "w": window})
        assert [e["node"]["service"]["name"] for e in past["service"]["upstream"]["edges"]] == ["legacy"]
    # a window too short to reach back to the old edge
    short = await client.data(doc, {"at": iso(PAST + 600), "w": "5m"})
    assert short["service"]["upstream"]["edges"] == []


async def test_long_windows_include_the_edges_of_the_hour_not_rolled_up_yet(
    client: Client, stores: Stores
) -> None:
    # rolled up a second before NOW: the hour of the live edges (the last 5 minutes) is not built yet,
    # the hour of api -> legacy (2 hours ago) is; a day and 30 days must show both, counted once
    for layer in stores.layers.values():
        await layer.rollup(NOW - 1)
    doc = ('query($w: Duration) { topology(layers: [NETWORK], window: $w) '
           '{ edges { source target perLayer { connections } } } }')
    live = (await client.data(doc, {"w": "15m"}))["topology"]["edges"]
    for window in ("P1D", "P30D"):
        edges = (await client.data(doc, {"w": window}))["topology"]["edges"]
        assert [e for e in edges if (e["source"], e["target"]) != ("api", "legacy")] == live, window
        assert ("api", "legacy") in {(e["source"], e["target"]) for e in edges}, window
    assert ("edge-gateway", "api") in {(e["source"], e["target"]) for e in live}


async def test_cluster_granularity_starts_from_the_apps_clusters(client: Client) -> None:
    d = await client.data('{ service(name: "api") { clusters upstream(granularity: CLUSTER) '
                          '{ edges { node { depth via service { name granularity app tier } } } } } }')
    svc = d["service"]
    assert svc["clusters"] == ["api-prod-v1"]
    (edge,) = svc["upstream"]["edges"]
    assert edge["node"]["via"] == "api-prod-v1"
    assert edge["node"]["service"] == {"name": "orders-prod-v3", "granularity": "CLUSTER", "app": "orders",
                                       "tier": 1}


async def test_pagination_with_cursors(client: Client) -> None:
    q = ('query($after: String) { service(name: "api") { upstream(depth: 3, first: 2, after: $after) '
         '{ %s } } }')
    pages: list[list[str]] = []
    after = None
    flags = []
    while True:
        up = (await client.data(q % DEPS, {"after": after}))["service"]["upstream"]
        pages.append([e["node"]["service"]["name"] for e in up["edges"]])
        flags.append(up["pageInfo"]["hasNextPage"])
        assert up["totalCount"] == 5
        if not up["pageInfo"]["hasNextPage"]:
            break
        assert up["pageInfo"]["endCursor"] == up["edges"][-1]["cursor"]
        after = up["pageInfo"]["endCursor"]
    assert pages == [["auth", "orders"], ["orders-db", "payments"], ["ledger"]]
    assert flags == [True, True, False]


async def test_services_connection_and_filter(client: Client) -> None:
    q = ('query($f: ServiceFilter, $after: String) { services(filter: $f, first: 3, after: $after) '
         '{ edges { cursor node { name } } pageInfo { hasNextPage endCursor } } }')
    names: list[str] = []
    after = None
    while True:
        s = (await client.data(q, {"after": after}))["services"]
        names += [e["node"]["name"] for e in s["edges"]]
        if not s["pageInfo"]["hasNextPage"]:
            break
        after = s["pageInfo"]["endCursor"]
    assert names == ["api", "auth", "catalog-only", "edge-gateway", "ledger", "legacy", "orders", "orders-db",
                     "payments", "user"]

    async def only(f: dict[str, Any]) -> list[str]:
        return [e["node"]["name"] for e in (await client.data(q, {"f": f}))["services"]["edges"]]

    assert await only({"tier": [0]}) == ["edge-gateway", "payments"]
    assert await only({"domain": ["core"], "ownerTeam": "core"}) == ["api", "auth", "legacy"]
    assert await only({"namePrefix": "order"}) == ["orders", "orders-db"]
    assert await only({"layers": ["TRACE"], "namePrefix": "u"}) == ["user"]


async def test_service_fields(client: Client) -> None:
    d = await client.data(f"""{{
      api: service(name: "api") {{ name tier domain kind layers owner {{ team email chat oncall }}
        links {{ logs traces metrics }} }}
      orders: service(name: "orders") {{ healthStatus {{ status reason since }} links {{ logs }}
        before: healthStatus(at: "{iso(NOW - 3600)}") {{ status since }}
        traces(first: 1) {{ traceId rootName durationMs spans error services start }} }}
      db: service(name: "orders-db") {{ kind virtual tier owner {{ team }} layers }}
      catalogOnly: service(name: "catalog-only") {{ name layers kind }}
    }}""")
    api = d["api"]
    assert (api["tier"], api["domain"], api["kind"]) == (1, "core", "SERVICE")
    assert api["layers"] == ["NETWORK", "IPC", "TRACE"]
    assert api["owner"] == {"team": "core", "email": "core@example.com", "chat": "#core", "oncall": None}
    # api overrides the logs link in its catalog entry; metrics comes from the configured template
    assert api["links"] == {"logs": "https://logs.example/custom?app=api", "traces": None,
                            "metrics": "https://metrics.example/d/svc?var-app=api"}
    orders = d["orders"]
    assert orders["healthStatus"] == {"status": "DEGRADED", "reason": "p99 latency above SLO",
                                      "since": iso(NOW - 600)}
    assert orders["before"] == {"status": "HEALTHY", "since": iso(NOW - 3 * 3600)}
    assert orders["links"]["logs"] == "https://logs.example/?q=orders"
    assert orders["traces"] == [{"traceId": "1bf7651916cd43dd8448eb211c80319d", "rootName": "GET /orders",
                                 "durationMs": 6.558, "spans": 4, "error": True,  # to the microsecond
                                 "services": ["edge-gateway", "api", "orders"], "start": iso(LIVE + 30)}]
    assert d["db"] == {"kind": "DATABASE", "virtual": True, "tier": None, "owner": None,
                       "layers": ["NETWORK"]}
    assert d["catalogOnly"] == {"name": "catalog-only", "layers": [], "kind": "SERVICE"}


async def test_health_of_dependencies_follows_at(client: Client) -> None:
    q = ('{ service(name: "api") { upstream(at: "%s") { edges { node { service { name healthStatus '
         '{ status } } } } } } }')
    live = await client.data(q % iso(NOW))
    status = {e["node"]["service"]["name"]: e["node"]["service"]["healthStatus"]["status"]
              for e in live["service"]["upstream"]["edges"]}
    assert status == {"auth": "UNKNOWN", "orders": "DEGRADED"}
    past = await client.data(q % iso(PAST + 60))
    # legacy was healthy two hours ago (it is unhealthy now)
    assert [(e["node"]["service"]["name"], e["node"]["service"]["healthStatus"]["status"])
            for e in past["service"]["upstream"]["edges"]] == [("legacy", "HEALTHY")]
    now = await client.data('{ service(name: "legacy") { healthStatus { status reason } } }')
    assert now["service"]["healthStatus"] == {"status": "UNHEALTHY", "reason": "decommissioned"}


async def test_unknown_service_is_null_with_the_closest_names(client: Client) -> None:
    out = await client.query('{ service(name: "nope") { name } blastRadius(name: "nope") { total } }')
    assert out["data"] == {"service": None, "blastRadius": None}
    assert [(e["path"], e["extensions"]["code"], e["extensions"]["suggestions"]) for e in out["errors"]] == [
        (["service"], "NOT_FOUND", []), (["blastRadius"], "NOT_FOUND", [])]
    out = await client.query('{ service(name: "order") { name } blastRadius(name: "Payment") { total } }')
    assert out["data"] == {"service": None, "blastRadius": None}
    hints = {e["path"][0]: e["extensions"]["suggestions"] for e in out["errors"]}
    assert hints["service"][:2] == ["orders", "orders-db"]
    assert hints["blastRadius"][0] == "payments"
    assert "did you mean 'orders'" in out["errors"][0]["message"]


async def test_times_relative_to_now_are_read_against_the_request_clock(client: Client) -> None:
    doc = ('query($at: DateTime) { service(name: "api") { upstream(at: $at, window: "15m") '
           '{ edges { node { service { name } } } } } }')

    async def names(at: str) -> list[str]:
        d = await client.data(doc, {"at": at})
        return [e["node"]["service"]["name"] for e in d["service"]["upstream"]["edges"]]

    ago = round((NOW - PAST - 60) / 60)  # the old edge's window, in minutes before NOW (the app's clock)
    assert await names(f"now-{ago}m") == ["legacy"] == await names(f"now - {ago * 60}s")
    assert await names(iso(PAST + 60)) == ["legacy"]
    assert await names("now") == ["auth", "orders"] == await names("now-PT0S")
    literal = await client.data(f'{{ service(name: "api") {{ upstream(at: "now-{ago}m", window: "15m") '
                                '{ edges { node { service { name } } } } } }')
    assert [e["node"]["service"]["name"] for e in literal["service"]["upstream"]["edges"]] == ["legacy"]
    for bad in ("now-", "now-abc", "yesterday", "now*2"):
        out = await client.query(doc, {"at": bad})
        assert out["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", (bad, out)


async def test_blast_radius(client: Client) -> None:
    d = await client.data("""{ blastRadius(name: "payments") { depth total countsByTier { tier count }
      teams { team email chat oncall services } unowned service { name }
      services(first: 2) { edges { node { depth via service { name } } } pageInfo { hasNextPage } } } }""")
    b = d["blastRadius"]
    assert (b["depth"], b["total"], b["service"]["name"]) == (10, 4, "payments")
    assert b["countsByTier"] == [{"tier": 0, "count": 1}, {"tier": 1, "count": 2}, {"tier": None, "count": 1}]
    assert b["teams"] == [
        {"team": "commerce", "email": None, "chat": None, "oncall": "commerce-pager", "services": ["orders"]},
        {"team": "core", "email": "core@example.com", "chat": "#core", "oncall": None, "services": ["api"]},
        {"team": "edge", "email": "edge@example.com", "chat": None, "oncall": None,
         "services": ["edge-gateway"]},
    ]
    assert b["unowned"] == ["user"]
    assert [(e["node"]["service"]["name"], e["node"]["depth"], e["node"]["via"])
            for e in b["services"]["edges"]] == [("orders", 1, "payments"), ("api", 2, "orders")]
    assert b["services"]["pageInfo"]["hasNextPage"] is True


async def test_blast_radius_with_filters_and_depth(client: Client) -> None:
    d = await client.data('{ blastRadius(name: "payments", depth: 2, tier: 1) { total '
                          'countsByTier { tier count } teams { team services } } }')
    b = d["blastRadius"]
    assert b["total"] == 2 and b["countsByTier"] == [{"tier": 1, "count": 2}]
    assert b["teams"] == [{"team": "commerce", "services": ["orders"]}, {"team": "core", "services": ["api"]}]
    d2 = await client.data('{ blastRadius(name: "ledger", domain: "edge") { total teams { team } } }')
    assert d2["blastRadius"] == {"total": 1, "teams": [{"team": "edge"}]}


TOPOLOGY = ("query($after: String, $first: Int, $tier: [Int!]) { topology(first: $first, after: $after, "
            "tier: $tier) { nodes { name kind } edges { source target layers } truncated "
            "pageInfo { hasNextPage endCursor } } }")


async def test_topology_is_a_flat_paged_graph(client: Client) -> None:
    edges: list[tuple[str, str, list[str]]] = []
    after = None
    first_page = None
    while True:
        t = (await client.data(TOPOLOGY, {"after": after, "first": 3}))["topology"]
        first_page = first_page or t
        edges += [(e["source"], e["target"], e["layers"]) for e in t["edges"]]
        assert t["truncated"] == t["pageInfo"]["hasNextPage"]
        if not t["pageInfo"]["hasNextPage"]:
            break
        after = t["pageInfo"]["endCursor"]
    assert edges == [
        ("api", "auth", ["NETWORK"]), ("api", "orders", ["NETWORK", "IPC", "TRACE"]),
        ("edge-gateway", "api", ["NETWORK", "IPC"]), ("orders", "orders-db", ["NETWORK"]),
        ("orders", "payments", ["IPC"]), ("payments", "ledger", ["TRACE"]),
        ("user", "edge-gateway", ["TRACE"]),
    ]
    assert first_page["nodes"] == [{"name": n, "kind": "SERVICE"}
                                   for n in ("api", "auth", "edge-gateway", "orders")]
    whole = (await client.data(TOPOLOGY, {"first": 100}))["topology"]
    assert whole["truncated"] is False and len(whole["edges"]) == 7
    assert {"name": "user", "kind": "USER"} in whole["nodes"]


async def test_topology_filter_keeps_edges_between_matching_services(client: Client) -> None:
    t = (await client.data(TOPOLOGY, {"first": 100, "tier": [0, 1]}))["topology"]
    assert [(e["source"], e["target"]) for e in t["edges"]] == [
        ("api", "orders"), ("edge-gateway", "api"), ("orders", "payments")]


async def test_a_failed_layer_gives_partial_data_and_an_error(stores: Stores, client: Client) -> None:
    await stores.layers[Layer.IPC].close()
    out = await client.query(f'{{ service(name: "api") {{ upstream(depth: 3) {{ {DEPS} failedLayers '
                             '{ layer message } layers } } }')
    up = out["data"]["service"]["upstream"]
    assert deps(up) == [("auth", 1, "api"), ("orders", 1, "api"), ("orders-db", 2, "orders")]
    assert up["layers"] == ["NETWORK", "TRACE"]
    assert up["failedLayers"][0]["layer"] == "IPC"
    (error,) = out["errors"]
    assert error["extensions"] == {"code": "UNAVAILABLE", "layer": "IPC"}
    assert error["path"] == ["service", "upstream"]
    assert "IPC" in error["message"]


async def test_a_failed_layer_in_topology_and_blast_radius(stores: Stores, client: Client) -> None:
    await stores.layers[Layer.TRACE].close()
    out = await client.query('{ topology(first: 100) { edges { source target } } '
                             'blastRadius(name: "payments") { total } }')
    assert len(out["data"]["topology"]["edges"]) == 5
    assert out["data"]["blastRadius"]["total"] == 3  # user is reached only through TRACE
    errors = sorted((e["path"][0], e["extensions"]["code"], e["extensions"]["layer"]) for e in out["errors"])
    assert errors == [("blastRadius", "UNAVAILABLE", "TRACE"), ("topology", "UNAVAILABLE", "TRACE")]


async def test_every_layer_failing_still_answers_with_errors(stores: Stores, client: Client) -> None:
    for s in stores.layers.values():
        await s.close()
    out = await client.query('{ service(name: "api") { name upstream { totalCount } } }')
    assert out["data"]["service"] == {"name": "api", "upstream": {"totalCount": 0}}
    assert sorted(e["extensions"]["layer"] for e in out["errors"]) == ["IPC", "NETWORK", "TRACE"]


async def test_catalog_unavailable_is_reported(stores: Stores, client: Client) -> None:
    await stores.catalog.close()
    out = await client.query('{ service(name: "api") { name } }')
    assert out["data"] == {"service": None}
    (error,) = out["errors"]
    assert error["extensions"]["code"] == "UNAVAILABLE" and error["extensions"]["store"] == "catalog"


async def test_a_node_seen_only_by_a_layer_is_known(stores: Stores, client: Client) -> None:
    from tests.service.fleet import _w

    # written to the NETWORK store but never registered in the catalog's node registry
    await stores.layers[Layer.NETWORK].upsert_windows([_w(Layer.NETWORK, "ghost", "ghost-db",
                                                          dst_kind=NodeKind.DATABASE)])
    d = await client.data('{ a: service(name: "ghost-db") { name kind layers } '
                          'b: service(name: "ghost") { upstream { edges { node { service { name } } } } } }')
    assert d["a"] == {"name": "ghost-db", "kind": "DATABASE", "layers": ["NETWORK"]}
    assert d["b"]["upstream"]["edges"] == [{"node": {"service": {"name": "ghost-db"}}}]
