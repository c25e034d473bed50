"""Edge stats are merged only when a query selects ``perLayer``: every way of selecting it still gets them,
also right after queries that did not select it (nothing half-built is remembered)."""

from __future__ import annotations

from typing import Any

from tests.service.conftest import Client


def ipc_requests(edges: list[dict[str, Any]], name: str) -> int:
    (edge,) = [e["node"]["edge"] for e in edges if e["node"]["service"]["name"] == name]
    (ipc,) = [p for p in edge["perLayer"] if p["layer"] == "IPC"]
    return int(ipc["requests"])


async def test_blast_radius_services_carry_stats_after_a_counts_only_query(client: Client) -> None:
    counts = await client.data('{ blastRadius(name: "orders") { total } }')
    assert counts["blastRadius"]["total"] == 3  # api, edge-gateway, user
    d = await client.data('{ blastRadius(name: "orders") { total services { edges { node { service { name } '
                          'edge { layers perLayer { layer requests } } } } } } }')
    edges = d["blastRadius"]["services"]["edges"]
    assert ipc_requests(edges, "api") == 900


async def test_per_layer_in_a_named_fragment_or_inline_fragment_is_seen(client: Client) -> None:
    bare = await client.data('{ service(name: "api") { upstream { edges { node { service { name } '
                             'edge { layers } } } } } }')
    assert [e["node"]["service"]["name"] for e in bare["service"]["upstream"]["edges"]] == ["auth", "orders"]
    named = await client.data('query { service(name: "api") { upstream { ...Deps } } } '
                              'fragment Deps on DependencyConnection { edges { node { service { name } '
                              'edge { ...Stats } } } } '
                              'fragment Stats on TopologyEdge { perLayer { layer requests } }')
    assert ipc_requests(named["service"]["upstream"]["edges"], "orders") == 900
    inline = await client.data('{ service(name: "api") { upstream { edges { node { service { name } '
                               '... on Dependency { edge { perLayer { layer requests } } } } } } } }')
    assert ipc_requests(inline["service"]["upstream"]["edges"], "orders") == 900
