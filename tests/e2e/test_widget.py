"""The ``<service-topology>`` widget, embedded as a frontend team would, in Debian's headless Chromium.

A plain HTML page holding only the module (``/widget/service-topology.js``) and the element runs
against our real server over the hand-built topology of ``conftest`` (plus health events), and
``tests/js/widget.mjs`` reports what the widget drew: its SVG nodes and edges (data attributes and
accessible names) and its text description of the calls. The truth is the hand-built topology.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import (
    CHROMIUM,
    HEALTH,
    JS_DIR,
    TRACE_CALLS,
    TRACE_ID,
    Server,
    post_graphql,
    require_chromium,
    require_node_packages,
)
from topology.catalog import HealthState

pytestmark = pytest.mark.browser

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ARTEFACTS = Path(__file__).resolve().parents[2] / "var" / "artefacts" / "widget"
COLOURS = {"HEALTHY": "#2e7d32", "DEGRADED": "#f9a825", "UNHEALTHY": "#c62828", "UNKNOWN": "#8a8f98"}
# checkout-api, both directions, depth 2 (conftest.EDGES merged over the layers)
AROUND_CHECKOUT = {
    "web-frontend->checkout-api": ["IPC", "TRACE"],
    "checkout-api->payments-svc": ["IPC"],
    "checkout-api->inventory-api": ["IPC", "NETWORK"],
    "payments-svc->orders-db": ["NETWORK"],
    "inventory-api->stock-cache": ["NETWORK"],
    "user->web-frontend": ["TRACE"],
}
KINDS = {"web-frontend": "SERVICE", "checkout-api": "SERVICE", "payments-svc": "SERVICE",
         "inventory-api": "SERVICE", "orders-db": "DATABASE", "stock-cache": "DATABASE", "user": "USER"}


@pytest.fixture(scope="module", autouse=True)
def browser_tools() -> None:
    require_node_packages("playwright-core")
    require_chromium()
    require_widget()


def require_widget() -> None:
    from service.widget import BUNDLE
    from tests.conftest import require

    require(BUNDLE.is_file(), "the widget bundle widget/dist/service-topology.js (`make install-node`)")


def run_widget(base: str, scenario: str, *extra: str, timeout: float = 120) -> dict[str, Any]:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    argv = ["node", str(JS_DIR / "widget.mjs"), "--base", base, "--scenario", scenario,
            "--out", str(ARTEFACTS), "--chromium", CHROMIUM, *extra]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    try:
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pytest.fail(f"widget.mjs printed no report (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    assert done.returncode == 0 and report["ok"], report["error"]
    assert_offline(report)
    return report


def assert_offline(report: dict[str, Any]) -> None:
    assert report["blocked"] == []
    hosts = {urlsplit(u).hostname for u in report["requests"]}
    assert hosts <= LOOPBACK, hosts
    assert report["pageErrors"] == [], report["pageErrors"]


def edges_of(snapshot: dict[str, Any]) -> dict[str, list[str]]:
    return {e["id"]: sorted(e["layers"]) for e in snapshot["edges"]}


def nodes_of(snapshot: dict[str, Any]) -> set[str]:
    return {n["name"] for n in snapshot["nodes"]}


def test_embedded_widget_draws_the_neighbourhood(health_server: Server) -> None:
    r = run_widget(health_server.base, "embed")
    first = r["initial"]
    # Everything around checkout-api two hops either way, each edge with the layers that saw it.
    assert edges_of(first) == AROUND_CHECKOUT
    assert {n["name"]: n["kind"] for n in first["nodes"]} == KINDS
    assert [n["name"] for n in first["nodes"] if n["focus"]] == ["checkout-api"]
    # Health colours: from the health events; no event is UNKNOWN.
    for n in first["nodes"]:
        want = HEALTH.get(n["name"], HealthState.UNKNOWN).value
        assert (n["health"], n["fill"]) == (want, COLOURS[want]), n
    # The accessible description names every call drawn, and each node's name, kind and health.
    order = ["NETWORK", "IPC", "TRACE"]
    assert sorted(first["described"]) == sorted(
        f"{e.replace('->', ' calls ')} ({', '.join(sorted(ls, key=order.index))}), error rate 0.0%"
        for e, ls in AROUND_CHECKOUT.items())
    labels = {n["name"]: n["label"] for n in first["nodes"]}
    assert labels["payments-svc"] == "payments-svc, service, degraded, tier 0, owned by payments"
    assert labels["orders-db"] == "orders-db, database, unknown"
    assert first["label"] == "Topology around checkout-api: 7 services, 6 calls, 2 degraded or unhealthy"

    # Keyboard: Tab lands on the focused service, the right arrow on something it calls.
    assert r["keyboardStart"] == "checkout-api"
    assert r["keyboardRight"] in {"payments-svc", "inventory-api"}

    # Without NETWORK, the edges only NETWORK saw go (and the databases only they reached).
    assert edges_of(r["withoutNetwork"]) == {e: [x for x in ls if x != "NETWORK"]
                                             for e, ls in AROUND_CHECKOUT.items() if ls != ["NETWORK"]}
    assert nodes_of(r["withoutNetwork"]) == set(KINDS) - {"orders-db", "stock-cache"}

    # Degraded only: the degraded and unhealthy services, their calls, and the focus.
    assert nodes_of(r["degradedOnly"]) == {"checkout-api", "payments-svc", "inventory-api", "orders-db",
                                           "stock-cache"}
    assert set(edges_of(r["degradedOnly"])) == {"checkout-api->payments-svc", "checkout-api->inventory-api",
                                                "payments-svc->orders-db", "inventory-api->stock-cache"}

    # Virtual nodes collapsed: the databases and the user go with their calls.
    assert nodes_of(r["withoutVirtual"]) == {"web-frontend", "checkout-api", "payments-svc", "inventory-api"}
    assert set(edges_of(r["withoutVirtual"])) == {"web-frontend->checkout-api", "checkout-api->payments-svc",
                                                  "checkout-api->inventory-api"}

    # An hour ago nothing had been seen; back at now the same drawing, every node where it was.
    assert r["hourAgo"]["edges"] == [] and nodes_of(r["hourAgo"]) == {"checkout-api"}
    assert r["hourAgo"]["at"] is not None
    assert r["backToNow"]["at"] is None
    assert {n["name"]: n["transform"] for n in r["backToNow"]["nodes"]} == \
        {n["name"]: n["transform"] for n in r["beforeTravel"]["nodes"]}

    # Clicking a node selects it (node-select) and loads its own neighbourhood.
    assert r["selected"] == ["inventory-api"]
    assert r["clicked"]["service"] == "inventory-api"
    assert set(edges_of(r["clicked"])) == {"checkout-api->inventory-api", "inventory-api->stock-cache",
                                           "web-frontend->checkout-api"}

    # Blast radius of payments-svc: who calls it, and the teams to tell.
    br = r["blastRadius"]
    assert {"checkout-api", "web-frontend"} <= nodes_of(br)
    assert "Teams to notify" in br["panel"] and "payments" in br["panel"] and "web" in br["panel"]

    # Root cause: the widget shows (and marks) what the server's rootCause answers, in its order.
    answer = post_graphql(health_server.graphql, '{ rootCause(name: "checkout-api", depth: 2, first: 5) '
                          "{ verdict candidates { service { name } } } }")
    rc = answer["data"]["rootCause"]  # type: ignore[index]
    want = [c["service"]["name"] for c in rc["candidates"]]
    assert want  # the degraded and unhealthy callees make candidates: the check is not empty
    assert (r["rootCause"]["verdict"], r["rootCause"]["ranking"]) == (rc["verdict"], want)
    assert r["rootCause"]["ranked"] == sorted(n for n in want if n in nodes_of(r["rootCause"]))

    # The export link carries the same selection.
    q = parse_qs(urlsplit(r["exportUrl"]).query)
    assert urlsplit(r["exportUrl"]).path == "/export"
    assert q["format"] == ["dot"] and q["service"] == ["payments-svc"]
    assert (ARTEFACTS / "widget-embed.png").stat().st_size > 10_000


TRACE_QUERY = ("query($id: String!) { trace(traceId: $id) { "
               "edges { source target calls errors durationMs } } }")


def test_trace_overlay_draws_the_calls_query_trace_answers(health_server: Server) -> None:
    answer = post_graphql(f"{health_server.base}/graphql", TRACE_QUERY, {"id": TRACE_ID})
    edges = answer["data"]["trace"]["edges"]  # type: ignore[index]
    server = {f"{e['source']}->{e['target']}": e for e in edges}
    # the server's answer is the hand-built trace's calls (conftest.seed_trace)
    assert {k: (e["calls"], e["errors"]) for k, e in server.items()} == TRACE_CALLS

    r = run_widget(health_server.base, "trace", "--trace", TRACE_ID)
    drawn = r["withTrace"]
    # the overlaid calls, highlighted and described, are Query.trace's edges: fraud-check, which the map
    # does not have, is drawn too; the map's other calls stay, not highlighted
    assert drawn["highlighted"] == sorted(server)
    assert [t["edge"] for t in drawn["traced"]] == sorted(server)
    assert {t["trace"] for t in drawn["traced"]} == {TRACE_ID}
    for t in drawn["traced"]:
        e = server[t["edge"]]
        calls = f"{e['calls']} call{'s' if e['calls'] != 1 else ''}"
        assert t["text"].endswith(f"; in trace {TRACE_ID}: {calls}, {e['errors']} failed, "
                                  f"{e['durationMs']:.1f} ms"), t
    assert set(edges_of(drawn)) == set(AROUND_CHECKOUT) | set(server)
    assert {"fraud-check", "orders-db"} <= nodes_of(drawn)
    assert f"trace {TRACE_ID}: {len(server)} calls" in drawn["status"]
    # an id the server does not keep: the fallback (exemplar trace ids; none here), the map as it is
    assert r["notKept"]["highlighted"] == [] and r["notKept"]["traced"] == []
    assert set(edges_of(r["notKept"])) == set(AROUND_CHECKOUT)
    assert "not kept" in r["notKept"]["status"]
    assert r["noTrace"]["highlighted"] == [] and "trace" not in r["noTrace"]["status"]
    assert (ARTEFACTS / "widget-trace.png").stat().st_size > 10_000


def test_widget_asset_is_served_as_a_module(health_server: Server) -> None:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{health_server.base}/widget/service-topology.js", timeout=10) as resp:
        body = resp.read()
        assert resp.headers["content-type"].startswith("text/javascript")
    assert b"customElements.define(\"service-topology\"" in body or b"service-topology" in body
    assert b"https://" not in body.replace(b"https://www.w3.org", b"")  # nothing to fetch from elsewhere
    with opener.open(f"{health_server.base}/", timeout=10) as resp:
        assert b'href="/map"' in resp.read()  # the index links the map


def test_map_page_searches_acts_and_shares_the_view(health_server: Server) -> None:
    r = run_widget(health_server.base, "map")
    assert r["consoleErrors"] == []  # its live subscription connected too
    assert r["suggestions"] == ["checkout-api"]  # names starting with "che"
    after = r["afterAction"]
    assert after["service"] == "checkout-api" and "Blast radius of checkout-api" in after["panel"]
    # callers of checkout-api, transitively: web-frontend, then the user behind it
    assert {"checkout-api", "web-frontend"} <= nodes_of(after)
    assert "payments-svc" not in nodes_of(after)  # a callee is not in the blast radius
    q = parse_qs(urlsplit(r["url"]).query)
    assert q["service"] == ["checkout-api"] and q["mode"] == ["blast-radius"]
    # The same URL in a new page restores the view.
    assert (r["restored"]["service"], nodes_of(r["restored"])) == ("checkout-api", nodes_of(after))
    formats = {parse_qs(urlsplit(u).query)["format"][0]: urlsplit(u) for u in r["exportLinks"]}
    assert sorted(formats) == ["cytoscape", "dot", "graphml", "json", "mermaid"]
    assert all(u.path == "/export" and "service=checkout-api" in u.query for u in formats.values())


def test_live_widget_draws_new_traffic_in_place(tmp_path: Path) -> None:
    """New traffic ingested over HTTP reaches an open widget through the subscription within 5 s, and
    nothing that was drawn moves."""
    import asyncio
    import time

    import httpx

    from tests.admission_cases import spans
    from tests.e2e.conftest import seed_store, serve_embedded

    asyncio.run(seed_store(tmp_path / "store", time.time()))
    with serve_embedded(tmp_path, tmp_path / "store") as server:
        argv = ["node", str(JS_DIR / "widget.mjs"), "--base", server.base, "--scenario", "live",
                "--expect-node", "payments", "--within", "5000", "--out", str(ARTEFACTS),
                "--chromium", CHROMIUM]
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            if json.loads(first or "{}").get("ready") is not True:
                proc.wait(30)
                pytest.fail(f"the live widget did not subscribe: {first}{proc.stdout.read()}")
            # checkout-api now calls payments, seen by traces (a client span and its server span).
            t = time.time()
            body = spans((t - 2, t - 1.9), pair=True, client_name="checkout-api")
            r = httpx.post(f"{server.base}/v1/traces", content=body, trust_env=False,
                           headers={"content-type": "application/x-protobuf"})
            assert r.status_code == 200, r.text
            out, _ = proc.communicate(timeout=60)
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert proc.returncode == 0 and report["ok"], report["error"]
    assert_offline(report)
    assert "payments" not in nodes_of(report["initial"])
    assert "checkout-api->payments" in edges_of(report["after"])
    assert edges_of(report["after"])["checkout-api->payments"] == ["TRACE"]
    assert report["appearedAfterMs"] <= 5000  # the page waits --within 5000 ms at most
    assert report["moved"] == []  # in place: every node drawn before is where it was
    assert set(AROUND_CHECKOUT) <= set(edges_of(report["after"]))


def test_screenshots_of_a_50_node_neighbourhood_and_the_10000_service_fleet(health_server: Server) -> None:
    """Artefacts under var/artefacts/widget/ (look at them): the layered SVG drawing of a synthetic
    50-node neighbourhood and the WebGL drawing of a synthetic 10,000-service fleet."""
    r = run_widget(health_server.base, "shots", timeout=240)
    assert (r["neighbourhood"]["renderer"], r["neighbourhood"]["nodes"]) == ("svg", 50)
    assert (r["fleet"]["renderer"], r["fleet"]["nodes"]) == ("webgl", 10000)
    assert r["fleet"]["label"].startswith("Fleet map: 10000 services")
    for name in ("widget-neighbourhood-50.png", "widget-fleet-10000.png"):
        assert (ARTEFACTS / name).stat().st_size > 20_000, name
