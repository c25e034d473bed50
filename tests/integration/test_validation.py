"""Validate fully, then apply (issue 8): the malformed records of the issue are refused with a reason,
nothing of them is stored, and later queries on the service they named answer as before; a store that
does not take a health event leaves the pipeline untouched (503); refusals before admission (size,
encoding) are counted and dead-lettered like the others.

The shared table (``tests/admission_cases.py``) covers each malformed record on both roads; this file
checks what the HTTP road leaves behind for queries, on the real ASGI app and embedded store.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from service.runtime import Runtime
from tests.admission_cases import CASES, ROADS, Case, js, metrics, spans
from tests.integration.asgi import ingest_client
from topology.catalog import NAME_MAX
from topology.model import Granularity
from topology.pipeline import Pipeline
from topology.store.base import ServiceFilter, Stores
from topology.store.embedded import open_stores

QUERY = """query($n: String!) { service(name: $n) {
  name tier domain owner { team email chat oncall } clusters links { logs traces metrics }
  healthStatus { status reason }
} }"""
GOOD = {"name": "checkout", "tier": 1, "domain": "shop", "owner": {"team": "carts", "oncall": "carts-pager"},
        "clusters": ["checkout-prod"], "links": {"logs": "https://logs.example.com/checkout"}}
JSON_KINDS = ("catalog", "health", "addresses")


class Server:
    def __init__(self, client: httpx.AsyncClient, runtime: Runtime, stores: Stores, data: Path) -> None:
        self.client, self.runtime, self.stores, self.data = client, runtime, stores, data

    async def post(self, kind: str, body: bytes, **headers: str) -> httpx.Response:
        route, content_type, _ = ROADS[kind]
        r = await self.client.post(route, content=body, headers={"content-type": content_type, **headers})
        assert r.status_code != 500, r.text
        return r

    async def service(self, name: str = "checkout") -> dict[str, Any]:
        r = await self.client.post("/graphql", json={"query": QUERY, "variables": {"n": name}})
        body = r.json()
        assert r.status_code == 200 and "errors" not in body, body
        return dict(body["data"]["service"] or {})

    async def absent(self, name: str) -> bool:
        """Whether the service is unknown (null, with or without a NOT_FOUND error)."""
        r = await self.client.post("/graphql", json={"query": QUERY, "variables": {"n": name}})
        body = r.json()
        codes = {e["extensions"]["code"] for e in body.get("errors", ())}
        return r.status_code == 200 and body["data"]["service"] is None and codes <= {"NOT_FOUND"}

    def letters(self) -> list[dict[str, Any]]:
        path = self.data / "dead-letters.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    stores = open_stores(tmp_path / "store")
    runtime = Runtime(stores, tmp_path, Pipeline())
    async with ingest_client(stores, runtime) as c:
        yield Server(c, runtime, stores, tmp_path)
    await stores.close()


async def _known_state(s: Server) -> dict[str, Any]:
    now = time.time()
    assert (await s.post("catalog", js([GOOD]))).status_code == 200
    event = {"service": "checkout", "status": "DEGRADED", "at": now - 5, "reason": "slow"}
    assert (await s.post("health", js([event]))).status_code == 200
    lease = {"ip": "10.9.0.1", "owner": "checkout", "start": now - 60, "cluster": "checkout-prod"}
    assert (await s.post("addresses", js([lease]))).status_code == 200
    before = await s.service()
    assert before["tier"] == 1 and before["links"]["logs"] == GOOD["links"]["logs"]
    assert before["healthStatus"] == {"status": "DEGRADED", "reason": "slow"}
    return before


def _rejected(kind: str) -> list[Case]:
    return [c for c in CASES if c.kind == kind and c.verdict == "rejected"]


@pytest.mark.parametrize("case", [c for k in JSON_KINDS for c in _rejected(k)], ids=str)
async def test_a_refused_record_stores_nothing_and_later_queries_answer_as_before(
        server: Server, case: Case) -> None:
    before = await _known_state(server)
    leases = (server.data / "addresses.jsonl").read_text()
    pipeline = server.runtime.pipeline
    health = pipeline.health.state_at("checkout", time.time())
    catalog = dict(pipeline.catalog)

    r = await server.post(case.kind, case.payload(time.time()))

    assert r.status_code == 400 and r.json()["code"] == "BAD_INPUT"
    assert r.json()["error"].startswith(f"{case.reason_class}: ")
    assert await server.service() == before
    assert (server.data / "addresses.jsonl").read_text() == leases
    assert pipeline.health.state_at("checkout", time.time()) == health and pipeline.catalog == catalog
    assert server.letters()[-1]["reason"] == r.json()["error"]


@pytest.mark.parametrize("entry", [
    {"name": "checkout", "tier": 1e30}, {"name": "checkout", "domain": {}},
    {"name": "checkout", "links": {"logs": 5}},
    {"name": "checkout", "links": {"logs": "javascript:alert(1)"}},
])
async def test_the_catalog_attacks_of_the_issue_leave_the_entry_as_it_was(
        server: Server, entry: dict[str, Any]) -> None:
    """One bad record refuses its batch whole: the good record beside it is not stored either."""
    before = await _known_state(server)
    r = await server.post("catalog", js([{"name": "other", "tier": 2}, entry]))
    assert r.status_code == 400 and "catalog record 1" in r.json()["error"]
    assert await server.service() == before
    assert await server.absent("other")


async def test_a_one_megabyte_service_name_becomes_no_node_on_any_route(server: Server) -> None:
    name = "n" * 1_000_000
    now = time.time()
    for kind, body in (("catalog", js([{"name": name}])),
                       ("health", js([{"service": name, "status": "HEALTHY", "at": now}])),
                       ("addresses", js([{"ip": "10.9.0.2", "owner": name, "start": now}])),
                       ("spans", spans((now - 2, now - 1), client_name=name)),
                       ("metrics", metrics(now - 1, names=(name,)))):
        r = await server.post(kind, body)
        assert r.status_code == 400, (kind, r.text)
    await server.runtime.flush(now + 3600)
    assert all(len(n) <= NAME_MAX for n in await server.stores.catalog.services([]))


async def test_a_name_at_the_limit_is_kept(server: Server) -> None:
    name = "n" * NAME_MAX
    assert (await server.post("catalog", js([{"name": name, "tier": 0}]))).status_code == 200
    assert (await server.service(name))["tier"] == 0


async def test_a_health_event_the_store_does_not_take_is_not_applied(tmp_path: Path) -> None:
    """The store fails (closed under the server): 503 with Retry-After, and the pipeline never saw the
    event (it used to apply it first, then fail)."""
    stores = open_stores(tmp_path / "store")
    runtime = Runtime(stores, tmp_path, Pipeline())
    async with ingest_client(stores, runtime) as c:
        await stores.close()
        event = {"service": "checkout", "status": "UNHEALTHY", "at": time.time()}
        r = await c.post("/ingest/health", content=js([event]), headers={"content-type": "application/json"})
        assert r.status_code == 503 and r.headers["retry-after"] and r.json()["code"] == "UNAVAILABLE"
        assert runtime.pipeline.health.state_at("checkout", time.time()) is None
        r = await c.post("/ingest/catalog", content=js([GOOD]), headers={"content-type": "application/json"})
        assert r.status_code == 503 and "checkout" not in runtime.pipeline.catalog


@pytest.mark.parametrize(("kind", "headers", "body", "status", "cls"), [
    ("flows", {"content-encoding": "gzip"}, b"not gzip at all", 400, "decode"),
    ("catalog", {"content-encoding": "br"}, js([GOOD]), 400, "decode"),
    ("spans", {"content-encoding": "deflate"}, b"\x00\x01 not deflate", 400, "decode"),
    ("health", {"content-length": str(2**40)}, b"", 413, "limit"),
    ("metrics", {"content-encoding": "gzip"}, gzip.compress(b"\x00" * (65 * 2**20)), 413, "limit"),
])
async def test_refusals_before_admission_are_counted_and_dead_lettered(
        server: Server, kind: str, headers: dict[str, str], body: bytes, status: int, cls: str) -> None:
    route, content_type, _ = ROADS[kind]
    request = server.client.build_request("POST", route, content=body,
                                          headers={"content-type": content_type, **headers})
    r = await server.client.send(request)
    assert r.status_code == status
    [letter] = server.letters()
    assert letter["kind"] == kind and letter["reason"].startswith(f"{cls}: ")
    assert server.runtime.counters()["rejected"] == {f"{kind}:{cls}": 1}
    assert server.runtime.counters()["received"] == {kind: 1}


async def test_a_gzip_body_that_is_fine_is_still_accepted(server: Server) -> None:
    r = await server.post("catalog", gzip.compress(js([GOOD])), **{"content-encoding": "gzip"})
    assert r.status_code == 200 and r.json() == {"accepted": 1}


async def test_a_catalog_entry_stored_before_the_checks_still_opens_without_its_bad_fields(
        tmp_path: Path) -> None:
    """Entries an older version stored (tier 1e30, an int link, a long name) do not stop the store from
    opening: each keeps its valid fields and loses the others."""
    import sqlite3

    stores = open_stores(tmp_path / "store")
    await stores.close()
    long = "l" * 1000
    rows = [("checkout", {**GOOD, "tier": 1e30, "links": {"logs": 5}}), (long, {"name": long, "tier": 2})]
    with sqlite3.connect(tmp_path / "store" / "catalog.db") as db:
        db.executemany("INSERT INTO services VALUES (?, ?)", [(n, json.dumps(d)) for n, d in rows])
    stores = open_stores(tmp_path / "store")
    try:
        found = await stores.catalog.services(["checkout", long])
        assert found["checkout"].tier is None and found["checkout"].links == {}
        assert found["checkout"].domain == "shop" and found["checkout"].owner is not None
        assert found[long].tier == 2
    finally:
        await stores.close()


@pytest.mark.parametrize(("why", "cls"), [("content-type", "decode"), ("limit", "limit"), ("timeout", None)])
async def test_http_layer_refusals_count_as_input_of_their_route(
        tmp_path: Path, why: str, cls: str | None) -> None:
    """The hook the HTTP layer's middleware calls (service.limits, service.guard): a refused content type
    is a decode rejection of the route's kind; a timeout is not input at all."""
    from service.receiver import refused_at_http

    stores = open_stores(tmp_path / "store")
    runtime = Runtime(stores, tmp_path, Pipeline())
    refused_at_http(runtime, "/ingest/catalog", why)
    refused_at_http(runtime, "/graphql", why)
    await stores.close()
    assert runtime.counters()["rejected"] == ({f"catalog:{cls}": 1} if cls else {})
    letters = (tmp_path / "dead-letters.jsonl").read_text().splitlines() if cls else []
    assert [json.loads(x)["kind"] for x in letters] == (["catalog"] if cls else [])


async def test_a_peer_name_over_the_limit_makes_no_node(server: Server) -> None:
    """peer.service on an unpaired client span (TRACE) and server.address on a client metric (IPC) name
    the callee's node: past the name limit they name nothing, the rest of the request is kept."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    name = "p" * 100_000
    now = time.time()
    traces = ExportTraceServiceRequest.FromString(spans((now - 2, now - 1), (now - 2, now - 1)))
    for good, sp in zip((False, True), (s for rs in traces.resource_spans for ss in rs.scope_spans
                                         for s in ss.spans), strict=False):
        kv = sp.attributes.add()
        kv.key, kv.value.string_value = "peer.service", name if not good else "ledger"
    assert (await server.post("spans", traces.SerializeToString())).status_code == 200
    req = ExportMetricsServiceRequest.FromString(metrics(now - 1))
    point = req.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0]
    point.attributes[0].value.string_value = name
    assert (await server.post("metrics", req.SerializeToString())).status_code == 200
    await server.runtime.flush(now + 3600)
    names = await server.stores.catalog.list_names(ServiceFilter(), Granularity.APP, 1000, None)
    assert {"checkout", "ledger"} <= set(names) and all(len(n) <= NAME_MAX for n in names)


async def test_a_content_type_the_guard_refuses_is_counted_and_dead_lettered(tmp_path: Path) -> None:
    """The request guard (service.guard) tells the app of each 415 on an ingest route; wired to
    refused_at_http, the refusal is a decode rejection of the route's kind, like a body that does not
    decode."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    from service.guard import RequestGuard
    from service.receiver import ingest_routes, refused_at_http

    stores = open_stores(tmp_path / "store")
    runtime = Runtime(stores, tmp_path, Pipeline())
    app = Starlette(routes=ingest_routes(runtime), middleware=[Middleware(
        RequestGuard, on_refused=lambda path, why: refused_at_http(runtime, path, why))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/ingest/catalog", content=js([GOOD]), headers={"content-type": "text/plain"})
    await stores.close()
    assert r.status_code == 415
    assert runtime.counters()["rejected"] == {"catalog:decode": 1}
    [letter] = [json.loads(x) for x in (tmp_path / "dead-letters.jsonl").read_text().splitlines()]
    assert letter["kind"] == "catalog" and "Content-Type" in letter["reason"]
