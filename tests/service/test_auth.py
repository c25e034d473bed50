"""Authentication and authorisation against the real app: bearer tokens from a hashed token file,
scopes per route, refusals that store nothing, and the token file re-read when it changes.

Each anonymous write below was accepted by the server before authentication existed (the map's
owner became ``attacker-team``); with a token file configured it is refused and nothing changes.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.config import ServiceConfig
from service.receiver import ingest_routes
from service.runtime import Runtime
from service.security import authenticator_for
from service.tokens import TokenFile, hash_token, main, new_token, token_line
from tests.service.conftest import CONFIG
from tests.service.fleet import NOW
from topology.catalog import HealthState
from topology.pipeline import Pipeline
from topology.settings import ConfigError
from topology.store.base import Stores

ATTACK_CATALOG = [{"name": "api", "tier": 0, "owner": {"team": "attacker-team", "oncall": "attacker-pager"},
                   "links": {"logs": "https://phish.example/login"}}]
ATTACK_HEALTH = [{"service": "api", "status": "UNHEALTHY", "at": NOW - 10, "reason": "fake outage"}]
ATTACK_LEASE = [{"ip": "10.9.9.9", "owner": "attacker", "kind": "WORKLOAD", "start": NOW - 60,
                 "end": None, "cluster": None}]
ATTACKS = [("/ingest/catalog", ATTACK_CATALOG), ("/ingest/health", ATTACK_HEALTH),
           ("/ingest/addresses", ATTACK_LEASE)]
SERVICE_QUERY = "{ service(name: \"api\") { name } }"
BASE = "http://testserver"


@dataclass
class Secured:
    http: httpx.AsyncClient
    stores: Stores
    runtime: Runtime
    token_file: Path
    tokens: dict[str, str]  # scope set name -> token

    def bearer(self, who: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[who]}"}

    async def owner_team(self) -> str | None:
        info = (await self.stores.catalog.services(["api"])).get("api")
        return None if info is None or info.owner is None else info.owner.team

    async def health(self) -> HealthState | None:
        status = (await self.stores.catalog.health(["api"], NOW)).get("api")
        return None if status is None else status.status


def write_tokens(path: Path, tokens: dict[str, tuple[str, list[str]]]) -> None:
    """``tokens``: name -> (token, scopes); written atomically, as an operator would (mv)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# tokens of the tests\n\n" + "".join(
        token_line(name, scopes, token) + "\n" for name, (token, scopes) in tokens.items()), encoding="utf-8")
    os.replace(tmp, path)


GRANTS = {"reader": ["read"], "collector": ["ingest"], "operator": ["admin"],
          "all": ["read", "ingest", "admin"]}


@pytest.fixture
async def secured(stores: Stores, tmp_path: Path) -> AsyncIterator[Secured]:
    tokens = {who: new_token() for who in GRANTS}
    path = tmp_path / "tokens.jsonl"
    write_tokens(path, {who: (tokens[who], scopes) for who, scopes in GRANTS.items()})
    config = replace(CONFIG, tokens_file=str(path))
    runtime = Runtime(stores, tmp_path, Pipeline(), clock=lambda: NOW)
    app = create_app(stores, config, runtime=runtime, extra_routes=ingest_routes(runtime), clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        yield Secured(http, stores, runtime, path, tokens)


@pytest.mark.parametrize(("path", "records"), ATTACKS)
async def test_anonymous_writes_are_refused_and_store_nothing(secured: Secured, path: str,
                                                              records: list[object]) -> None:
    before = (await secured.owner_team(), await secured.health())
    r = await secured.http.post(path, json=records)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["code"] == "UNAUTHENTICATED"
    assert (await secured.owner_team(), await secured.health()) == before
    assert secured.runtime.counters()["accepted"] == {}


@pytest.mark.parametrize(("path", "records"), ATTACKS)
async def test_admin_routes_need_the_admin_scope(secured: Secured, path: str, records: list[object]) -> None:
    for who in ("reader", "collector"):
        r = await secured.http.post(path, json=records, headers=secured.bearer(who))
        assert r.status_code == 403, r.text
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
        assert 'scope="admin"' in r.headers["www-authenticate"]
        assert r.json()["code"] == "FORBIDDEN"
    assert secured.runtime.counters()["accepted"] == {}
    r = await secured.http.post(path, json=records, headers=secured.bearer("operator"))
    assert r.status_code == 200, r.text


async def test_an_admin_token_does_change_the_catalog(secured: Secured) -> None:
    """The refusals above are the guard's doing: the same request with the scope is applied."""
    assert await secured.owner_team() != "attacker-team"
    r = await secured.http.post("/ingest/catalog", json=ATTACK_CATALOG, headers=secured.bearer("operator"))
    assert r.status_code == 200, r.text
    assert await secured.owner_team() == "attacker-team"


async def test_a_wrong_or_malformed_credential_is_401_and_never_echoed(secured: Secured) -> None:
    for header in ("Bearer tpt_not-a-token", "Basic dXNlcjpwYXNz", "Bearer ", "tpt_only"):
        r = await secured.http.post("/graphql", json={"query": SERVICE_QUERY},
                                    headers={"authorization": header})
        assert r.status_code == 401, header
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert "not-a-token" not in r.text and "dXNlcjpwYXNz" not in r.text


async def test_graphql_needs_read_and_answers_graphql_shaped_errors(secured: Secured) -> None:
    body = {"query": SERVICE_QUERY}
    r = await secured.http.post("/graphql", json=body)
    assert r.status_code == 401
    assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    r = await secured.http.post("/graphql", json=body, headers=secured.bearer("collector"))
    assert r.status_code == 403
    assert r.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    for query in (SERVICE_QUERY, ""):
        r = await secured.http.get("/graphql", params={"query": query})
        assert r.status_code == 401  # GET with a query executes it: not open
    r = await secured.http.post("/graphql", json=body, headers=secured.bearer("reader"))
    assert r.status_code == 200
    assert r.json() == {"data": {"service": {"name": "api"}}}


async def test_open_routes_and_the_others(secured: Secured) -> None:
    assert (await secured.http.get("/healthz")).status_code == 200
    assert (await secured.http.get("/readyz")).status_code == 200
    page = await secured.http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "<html" in page.text.lower()  # GraphiQL: static, no data
    assert (await secured.http.get("/metrics")).status_code == 401
    assert (await secured.http.get("/metrics", headers=secured.bearer("collector"))).status_code == 403
    assert (await secured.http.get("/metrics", headers=secured.bearer("reader"))).status_code == 200
    assert (await secured.http.get("/no-such-route")).status_code == 401  # unknown paths are not open
    assert (await secured.http.get("/export", params={"service": "api"})).status_code == 401  # data
    for static in ("/map", "/widget/service-topology.js"):  # pages and code; their data needs a token
        assert (await secured.http.get(static)).status_code not in (401, 403), static
    assert (await secured.http.post("/map")).status_code == 401


async def test_otlp_refusals_are_rpc_statuses_in_the_request_encoding(secured: Secured) -> None:
    r = await secured.http.post("/v1/traces", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 401
    assert r.json()["code"] == 16  # google.rpc.Code UNAUTHENTICATED
    r = await secured.http.post("/v1/metrics", content=b"", headers={
        "content-type": "application/x-protobuf", **secured.bearer("reader")})
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/x-protobuf"
    assert r.content[:2] == b"\x08\x07"  # Status.code = 7 PERMISSION_DENIED
    r = await secured.http.post("/v1/metrics", content=b"", headers={
        "content-type": "application/x-protobuf", **secured.bearer("collector")})
    assert r.status_code not in (401, 403)


async def test_the_token_file_is_reread_when_it_changes(secured: Secured) -> None:
    reader = secured.tokens["reader"]
    body = {"query": SERVICE_QUERY}
    r = await secured.http.post("/graphql", json=body, headers=secured.bearer("reader"))
    assert r.status_code == 200
    successor = new_token()
    write_tokens(secured.token_file, {"reader-2": (successor, ["read"])})  # reader revoked, successor added
    r = await secured.http.post("/graphql", json=body, headers={"authorization": f"Bearer {reader}"})
    assert r.status_code == 401
    r = await secured.http.post("/graphql", json=body, headers={"authorization": f"Bearer {successor}"})
    assert r.status_code == 200
    # A broken edit keeps the tokens that were in force; a deleted file accepts none.
    secured.token_file.write_text("{not json\n", encoding="utf-8")
    r = await secured.http.post("/graphql", json=body, headers={"authorization": f"Bearer {successor}"})
    assert r.status_code == 200
    secured.token_file.unlink()
    r = await secured.http.post("/graphql", json=body, headers={"authorization": f"Bearer {successor}"})
    assert r.status_code == 401


def test_the_token_file_holds_hashes_and_a_bad_one_is_refused_at_start(tmp_path: Path) -> None:
    token = new_token()
    line = json.loads(token_line("collector", ["ingest"], token))
    assert line == {"name": "collector", "sha256": hash_token(token), "scopes": ["ingest"]}
    assert token not in json.dumps(line)
    path = tmp_path / "tokens.jsonl"
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    found = TokenFile(path).lookup(token)
    assert found is not None and found.name == "collector" and found.scopes == {"ingest"}
    for bad, why in ((line | {"scopes": ["root"]}, "unknown scope"), (line | {"sha256": "abc"}, "64 hex"),
                     (line | {"name": ""}, "name")):
        path.write_text(json.dumps(bad) + "\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=f"TOPOLOGY_TOKENS_FILE: .*tokens.jsonl:1.*{why}"):
            authenticator_for(replace(ServiceConfig(), tokens_file=str(path)))
    with pytest.raises(ConfigError, match="TOPOLOGY_TOKENS_FILE"):
        authenticator_for(replace(ServiceConfig(), tokens_file=str(tmp_path / "missing")))


def test_the_token_maker_prints_the_token_once_and_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--name", "grafana", "--scopes", "read"]) == 0
    out, err = capsys.readouterr()
    token = err.strip()
    assert token.startswith("tpt_") and len(token) > 40
    assert json.loads(out) == {"name": "grafana", "sha256": hash_token(token), "scopes": ["read"]}
    assert token not in out


async def test_without_authentication_configured_everything_is_open(stores: Stores, tmp_path: Path) -> None:
    """Tests and the loopback demo run without authentication (the server refuses that elsewhere)."""
    runtime = Runtime(stores, tmp_path, Pipeline(), clock=lambda: NOW)
    app = create_app(stores, CONFIG, runtime=runtime, extra_routes=ingest_routes(runtime), clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        assert (await http.post("/graphql", json={"query": SERVICE_QUERY})).json()["data"]["service"]
        assert (await http.post("/ingest/catalog", json=ATTACK_CATALOG)).status_code == 200
