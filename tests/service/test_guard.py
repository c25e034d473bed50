"""The request guard against the real app: a web page's cross-site simple request, a DNS-rebound
``Host``, a wrong ``Content-Type`` and the split ingest port are refused before any route runs, and
nothing is stored. CORS is opt-in."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.guard import default_hosts, host_allowed
from service.receiver import ingest_routes
from service.runtime import Runtime
from service.security import served_config
from tests.service.conftest import CONFIG
from tests.service.fleet import NOW
from tests.service.test_auth import ATTACK_CATALOG
from topology.pipeline import Pipeline
from topology.store.base import Stores

EVIL = "http://evil.example"
CATALOG_TEXT = b'[{"name": "api", "tier": 0, "owner": {"team": "attacker-team"}}]'


@contextlib.asynccontextmanager
async def app_client(stores: Stores, tmp_path: Path, base: str = "http://127.0.0.1:8080",
                     **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    config = served_config(replace(CONFIG, **settings))
    runtime = Runtime(stores, tmp_path, Pipeline(), clock=lambda: NOW)
    app = create_app(stores, config, runtime=runtime, extra_routes=ingest_routes(runtime), clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as http:
        yield http, runtime


async def owner_team(stores: Stores) -> str | None:
    info = (await stores.catalog.services(["api"]))["api"]
    return None if info.owner is None else info.owner.team


async def test_a_cross_site_simple_request_is_refused(stores: Stores, tmp_path: Path) -> None:
    """What a page on any site can make a visitor's browser send, without a preflight."""
    async with app_client(stores, tmp_path) as (http, runtime):
        r = await http.post("/ingest/catalog", content=CATALOG_TEXT,
                            headers={"content-type": "text/plain", "origin": EVIL})
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "FORBIDDEN_ORIGIN"
        vpc = b"2 123456789012 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 1800000000 1800000001 ACCEPT OK"
        r = await http.post("/ingest/vpcflows", content=vpc,
                            headers={"content-type": "text/plain", "origin": EVIL})
        assert r.status_code == 403, r.text
        # Without an Origin (a proxy may strip it) the type still refuses what a page can send.
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
            headers = {} if ctype is None else {"content-type": ctype}
            r = await http.post("/ingest/catalog", content=CATALOG_TEXT, headers=headers)
            assert r.status_code == 415, (ctype, r.text)
            assert "application/json" in r.json()["error"]
        assert await owner_team(stores) != "attacker-team"
        assert runtime.counters()["accepted"] == {}
        # The same body from a non-browser client with the right type goes through.
        r = await http.post("/ingest/catalog", content=CATALOG_TEXT,
                            headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        assert await owner_team(stores) == "attacker-team"


@pytest.mark.parametrize(("path", "ctype", "refused"), [
    ("/ingest/flows", "application/octet-stream", True),
    ("/ingest/flows", "application/x-topology-flows", False),
    ("/v1/traces", "text/plain", True),
    ("/v1/traces", "application/json", False),
    ("/v1/metrics", "application/x-protobuf; charset=binary", False),
    ("/ingest/addresses", "application/json; charset=utf-8", False),
    ("/ingest/changes", "text/plain", True),
    ("/ingest/vpcflows", "text/plain", False),  # flow-log lines; the Origin check keeps pages out
    ("/ingest/vpcflows", "application/x-www-form-urlencoded", True),
    ("/ingest/anything-new", "text/plain", True),  # a route added later takes no type a page can send
])
async def test_each_ingest_route_takes_its_content_type(stores: Stores, tmp_path: Path, path: str, ctype: str,
                                                        refused: bool) -> None:
    async with app_client(stores, tmp_path) as (http, _):
        r = await http.post(path, content=b"[]" if "json" in ctype else b"", headers={"content-type": ctype})
        assert (r.status_code == 415) == refused, r.text


async def test_ingest_from_an_allowed_or_the_same_origin(stores: Stores, tmp_path: Path) -> None:
    async with app_client(stores, tmp_path, allowed_origins=("https://ops.example",)) as (http, _):
        for origin in ("https://ops.example", "http://127.0.0.1:8080"):
            r = await http.post("/ingest/addresses", json=[], headers={"origin": origin})
            assert r.status_code == 200, (origin, r.text)
        r = await http.post("/ingest/addresses", json=[], headers={"origin": "https://ops.example.evil"})
        assert r.status_code == 403


async def test_a_foreign_host_is_refused(stores: Stores, tmp_path: Path) -> None:
    """DNS rebinding: a page's own name resolved to 127.0.0.1 arrives with that name as Host."""
    async with app_client(stores, tmp_path) as (http, runtime):
        for path in ("/ingest/catalog", "/graphql"):
            body = ATTACK_CATALOG if "ingest" in path else {"query": "{ __typename }"}
            r = await http.post(path, json=body, headers={"host": "rebind.evil.example"})
            assert r.status_code == 400, r.text
            assert "TOPOLOGY_ALLOWED_HOSTS" in r.json()["error"]
        assert (await http.get("/healthz", headers={"host": "10.1.2.3:8080"})).status_code == 200  # probes
        for host in ("localhost:8080", "127.0.0.1", "[::1]:8080"):
            r = await http.post("/graphql", json={"query": "{ __typename }"}, headers={"host": host})
            assert r.status_code == 200, host
        assert await owner_team(stores) != "attacker-team"
        assert runtime.counters()["accepted"] == {}


def test_allowed_hosts() -> None:
    assert default_hosts("127.0.0.1") == ("localhost", "127.0.0.1", "::1")
    assert default_hosts("10.0.0.5") == ("localhost", "127.0.0.1", "::1", "10.0.0.5")
    assert default_hosts("0.0.0.0") == ("*",)
    allowed = ("topology.internal", "*.svc.cluster.local", "::1")
    assert host_allowed("topology.internal:8443", allowed)
    assert host_allowed("topology.topo.svc.cluster.local", allowed)
    assert host_allowed("[::1]:80", allowed)
    assert not host_allowed("topology.internal.evil.example", allowed)
    assert not host_allowed("svc.cluster.local.evil", allowed)
    assert not host_allowed(None, allowed) and not host_allowed("", ("*",))


async def test_cors_is_off_unless_origins_are_listed(stores: Stores, tmp_path: Path) -> None:
    preflight = {"origin": "https://ops.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization, content-type"}
    async with app_client(stores, tmp_path) as (http, _):
        r = await http.options("/graphql", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    async with app_client(stores, tmp_path, allowed_origins=("https://ops.example",)) as (http, _):
        r = await http.options("/graphql", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://ops.example"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = await http.options("/graphql", headers=preflight | {"origin": EVIL})
        assert r.status_code == 400
        assert "access-control-allow-origin" not in r.headers


async def test_a_separate_ingest_port_splits_the_routes(stores: Stores, tmp_path: Path) -> None:
    query = {"query": "{ __typename }"}
    async with app_client(stores, tmp_path, base="http://127.0.0.1:8080", ingest_port=4318) as (http, _):
        assert (await http.post("/graphql", json=query)).status_code == 200
        r = await http.post("/ingest/addresses", json=[])
        assert r.status_code == 404 and "ingest port" in r.json()["error"]
        assert (await http.get("/healthz")).status_code == 200
    async with app_client(stores, tmp_path, base="http://127.0.0.1:4318", ingest_port=4318) as (http, _):
        assert (await http.post("/ingest/addresses", json=[])).status_code == 200
        assert (await http.post("/graphql", json=query)).status_code == 404
        assert (await http.get("/metrics")).status_code == 404
        assert (await http.get("/readyz")).status_code == 200


async def test_a_websocket_to_a_foreign_host_is_closed_before_it_opens(stores: Stores) -> None:
    app = create_app(stores, served_config(CONFIG), clock=lambda: NOW)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:  # the client connects, and leaves once answered
        return {"type": "websocket.disconnect", "code": 1000} if sent else {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for host, answer in ((b"rebind.evil.example", "websocket.close"),
                         (b"127.0.0.1:8080", "websocket.accept")):
        sent.clear()
        await app({"type": "websocket", "asgi": {"version": "3.0"}, "path": "/graphql", "root_path": "",
                   "query_string": b"", "scheme": "ws", "server": ("127.0.0.1", 8080),
                   "client": ("127.0.0.1", 1), "subprotocols": ["graphql-transport-ws"],
                   "headers": [(b"host", host), (b"sec-websocket-protocol", b"graphql-transport-ws")]},
                  receive, send)
        assert sent[0]["type"] == answer, (host, sent)
