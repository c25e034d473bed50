"""``GET /export`` over the hand-built fleet, each format read back by a real consumer of it: Graphviz
``dot`` renders the DOT (its SVG names every node and edge), networkx reads the GraphML, ``json`` reads
the JSON and Cytoscape JSON. (Mermaid and Cytoscape.js themselves read theirs in tests/e2e/test_export.py.)
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from service.export import Edge, Graph, Node, Selection, to_dot, to_graphml, to_mermaid
from tests.conftest import require
from tests.service.conftest import Client

# upstream of api, 3 hops (tests/service/fleet.py): what it calls, with the layers that saw each call
API_UPSTREAM = {
    ("api", "auth"): ["NETWORK"],
    ("api", "orders"): ["NETWORK", "IPC", "TRACE"],
    ("orders", "orders-db"): ["NETWORK"],
    ("orders", "payments"): ["IPC"],
    ("payments", "ledger"): ["TRACE"],
}
API_DEPTHS = {"api": 0, "auth": 1, "orders": 1, "orders-db": 2, "payments": 2, "ledger": 3}
LIVE_EDGES = {*API_UPSTREAM, ("edge-gateway", "api"), ("user", "edge-gateway")}
SVG = "{http://www.w3.org/2000/svg}"


async def export(client: Client, **params: str) -> Any:
    return await client.http.get("/export", params=params)


def graphviz_svg(dot: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Node labels and edges (by labels) as Graphviz's own SVG rendering of ``dot`` has them."""
    require(shutil.which("dot") is not None, "Graphviz `dot` (Debian package graphviz)")
    done = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=30, check=True)
    assert done.stderr == "", done.stderr  # no warning: the file is clean DOT
    root = ET.fromstring(done.stdout)
    labels: dict[str, str] = {}
    edges: set[tuple[str, str]] = set()
    for g in root.iter(f"{SVG}g"):
        title = g.findtext(f"{SVG}title") or ""
        if g.get("class") == "node":
            labels[title] = "".join(t.text or "" for t in g.iter(f"{SVG}text"))
        elif g.get("class") == "edge":
            src, dst = title.split("->")
            edges.add((src, dst))
    return set(labels.values()), {(labels[s], labels[t]) for s, t in edges}


async def test_json_export_of_a_neighbourhood(client: Client) -> None:
    r = await export(client, service="api", direction="upstream", depth="3", format="json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["format"] == "service-topology/v1" and body["truncated"] is False
    assert body["selection"]["service"] == "api" and body["selection"]["depth"] == 3
    assert {(e["source"], e["target"]): e["layers"] for e in body["edges"]} == API_UPSTREAM
    assert {n["name"]: n["depth"] for n in body["nodes"]} == API_DEPTHS
    orders = next(n for n in body["nodes"] if n["name"] == "orders")
    assert (orders["health"], orders["team"], orders["tier"]) == ("DEGRADED", "commerce", 1)
    api_orders = next(e for e in body["edges"] if e["target"] == "orders")
    ipc = next(p for p in api_orders["perLayer"] if p["layer"] == "IPC")
    assert (ipc["protocol"], ipc["requests"], ipc["errors"]) == ("grpc", 900, 9)
    assert api_orders["errorRate"] == pytest.approx(1 / 9)  # TRACE's 1 of 9 is the worst layer


async def test_dot_export_renders_in_graphviz(client: Client) -> None:
    r = await export(client, service="api", direction="upstream", depth="3", format="dot")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/vnd.graphviz")
    nodes, edges = graphviz_svg(r.text)
    assert nodes == set(API_DEPTHS)
    assert edges == set(API_UPSTREAM)


async def test_graphml_export_reads_in_networkx(client: Client) -> None:
    nx = pytest.importorskip("networkx")
    r = await export(client, service="api", direction="upstream", depth="3", format="graphml",
                     layers="NETWORK")
    assert r.status_code == 200
    g = nx.read_graphml(io.BytesIO(r.content))
    assert g.is_directed()
    # NETWORK alone: api -> auth, api -> orders, orders -> orders-db (the other calls need IPC or TRACE)
    assert set(g.edges) == {("api", "auth"), ("api", "orders"), ("orders", "orders-db")}
    assert g.nodes["orders-db"]["kind"] == "DATABASE" and g.nodes["orders"]["health"] == "DEGRADED"
    assert g.nodes["orders"]["tier"] == 1 and g.nodes["orders"]["depth"] == 1
    assert g.edges["api", "orders"]["layers"] == "NETWORK" and g.edges["api", "orders"]["requests"] == 0


async def test_whole_graph_and_cytoscape_export(client: Client) -> None:
    r = await export(client, format="cytoscape")
    assert r.status_code == 200
    elements = json.loads(r.text)["elements"]
    assert {(e["data"]["source"], e["data"]["target"]) for e in elements["edges"]} == LIVE_EDGES
    names = {n["data"]["id"] for n in elements["nodes"]}
    assert names == {end for edge in LIVE_EDGES for end in edge}
    assert all(e["data"]["source"] in names and e["data"]["target"] in names for e in elements["edges"])


async def test_history_export(client: Client) -> None:
    # Two hours ago only api -> legacy was seen (tests/service/fleet.py PAST).
    from tests.service.fleet import PAST

    r = await export(client, format="json", service="api", direction="upstream", depth="1",
                     at=_iso(PAST + 30), window="5m")
    assert r.status_code == 200, r.text
    assert [(e["source"], e["target"]) for e in r.json()["edges"]] == [("api", "legacy")]


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat()


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"format": "svg"}, 400, "BAD_USER_INPUT"),
    ({"format": "dot", "service": "no-such-service"}, 404, "NOT_FOUND"),
    ({"format": "dot", "service": "api", "depth": "0"}, 400, "BAD_USER_INPUT"),
    ({"format": "dot", "service": "api", "depth": "two"}, 400, "BAD_USER_INPUT"),
    ({"format": "dot", "service": "api", "direction": "sideways"}, 400, "BAD_USER_INPUT"),
    ({"format": "dot", "layers": "RADIO"}, 400, "BAD_USER_INPUT"),
])
async def test_refused_exports_say_why(client: Client, params: dict[str, str], status: int,
                                       code: str) -> None:
    r = await export(client, **params)
    assert r.status_code == status, r.text
    err = r.json()["errors"][0]
    assert err["extensions"]["code"] == code and err["message"]


HOSTILE = Graph(Selection(service='we"ird\\name'), {
    'we"ird\\name': Node('we"ird\\name', "SERVICE", health="UNHEALTHY"),
    "<db>": Node("<db>", "DATABASE"),
}, {('we"ird\\name', "<db>"): Edge('we"ird\\name', "<db>", ["NETWORK"], 5, 0.5, [])})


def test_names_with_quotes_and_markup_stay_names() -> None:
    nodes, edges = graphviz_svg(to_dot(HOSTILE))
    assert nodes == {'we"ird\\name', "<db>"} and edges == {('we"ird\\name', "<db>")}
    mermaid = to_mermaid(HOSTILE)
    assert 'n1["we#quot;ird\\name"]:::unhealthy' in mermaid and 'n0[("#lt;db#gt;")]:::unknown' in mermaid
    nx = pytest.importorskip("networkx")
    g = nx.read_graphml(io.BytesIO(to_graphml(HOSTILE).encode()))
    assert set(g.nodes) == {'we"ird\\name', "<db>"}
