"""Answers kept for repeated requests (service/answers.py), through the real HTTP app: served again
only while the data, the second and the request are the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.answers import AnswerCache, Answered
from service.app import create_app
from service.receiver import ingest_routes
from service.runtime import Runtime
from service.tokens import new_token
from tests.service.conftest import CONFIG
from tests.service.fleet import LIVE, NOW, _w
from tests.service.test_auth import write_tokens
from topology.model import Layer
from topology.pipeline import Pipeline
from topology.store.base import Stores

Q = """query Q($name: String!) { service(name: $name) { name healthStatus { status reason }
  owner { team } upstream(depth: 3) { totalCount edges { node { depth service { name } edge { layers } } } } }
}"""


def client_of(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@dataclass
class Served:
    http: httpx.AsyncClient
    stores: Stores
    answers: AnswerCache
    clock: list[float]

    async def ask(self, name: str, headers: dict[str, str] | None = None, query: str = Q) -> dict[str, Any]:
        r = await self.http.post("/graphql", json={"query": query, "variables": {"name": name}},
                                 headers=headers)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out


@pytest.fixture
async def served(stores: Stores, tmp_path: Path) -> AsyncIterator[Served]:
    clock = [NOW]
    runtime = Runtime(stores, tmp_path, Pipeline(), clock=lambda: clock[0])
    app = create_app(stores, CONFIG, runtime=runtime, extra_routes=ingest_routes(runtime),
                     clock=lambda: clock[0])
    assert isinstance(app.state.answers, AnswerCache)
    async with client_of(app) as http:
        yield Served(http, stores, app.state.answers, clock)


def upstream_names(out: dict[str, Any]) -> set[str]:
    return {e["node"]["service"]["name"] for e in out["data"]["service"]["upstream"]["edges"]}


async def test_a_repeated_request_is_answered_from_what_was_kept(served: Served) -> None:
    first = await served.ask("api")
    assert served.answers.hits == 0 and len(served.answers) == 1
    again = await served.ask("api")
    assert again == first
    assert served.answers.hits == 1


async def test_new_windows_written_to_a_layer_change_the_answer(served: Served) -> None:
    before = await served.ask("api")
    assert "search" not in upstream_names(before)
    await served.stores.layers[Layer.IPC].upsert_windows([_w(Layer.IPC, "api", "search")])
    after = await served.ask("api")
    assert upstream_names(after) == upstream_names(before) | {"search"}
    assert served.answers.hits == 0
    assert await served.ask("api") == after  # and that answer is kept in turn
    assert served.answers.hits == 1


async def test_health_posted_to_the_ingest_route_changes_the_answer(served: Served) -> None:
    before = await served.ask("api")
    assert before["data"]["service"]["healthStatus"]["status"] == "UNKNOWN"
    r = await served.http.post("/ingest/health", json=[
        {"service": "api", "status": "UNHEALTHY", "at": NOW - 10, "reason": "disk full"}])
    assert r.status_code == 200, r.text
    after = await served.ask("api")
    assert after["data"]["service"]["healthStatus"] == {"status": "UNHEALTHY", "reason": "disk full"}


async def test_other_variables_other_documents_other_answers(served: Served) -> None:
    api = await served.ask("api")
    orders = await served.ask("orders")
    assert api != orders and orders["data"]["service"]["name"] == "orders"
    fewer = await served.ask("api", query=Q.replace("owner { team } ", ""))
    assert "owner" not in fewer["data"]["service"]
    assert served.answers.hits == 0 and len(served.answers) == 3


async def test_time_moving_on_makes_a_new_key_and_windows_leave_the_live_range(served: Served) -> None:
    before = await served.ask("api")
    assert "orders" in upstream_names(before)
    served.clock[0] = NOW + 0.5  # the same second: the same windows answer
    assert await served.ask("api") == before and served.answers.hits == 1
    # every window of the fleet started at LIVE; the live range (15 minutes) ends now: once the
    # clock passes LIVE + 60 + 15 minutes, none of them is in it any more
    served.clock[0] = LIVE + 60 + CONFIG.live_window + 1
    later = await served.ask("api")
    assert served.answers.hits == 1
    assert later["data"]["service"]["upstream"]["totalCount"] == 0


async def test_errors_and_unknown_services_are_never_kept(served: Served) -> None:
    for _ in range(2):
        out = await served.ask("no-such-service")
        assert out["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert served.answers.hits == 0 and len(served.answers) == 0


async def test_the_kept_answers_are_bounded_in_bytes(stores: Stores) -> None:
    config = replace(CONFIG, response_cache=4 * 1024)
    app = create_app(stores, config, clock=lambda: NOW)
    answers = app.state.answers
    async with client_of(app) as http:
        for i in range(60):
            document = f"query Q{i}($name: String!) {{ service(name: $name) {{ name owner {{ team }} }} }}"
            body = {"query": document, "variables": {"name": "api"}}
            r = await http.post("/graphql", json=body)
            assert r.status_code == 200 and "errors" not in r.json()
            assert answers.bytes <= 4 * 1024
        assert 0 < len(answers) < 60  # the oldest went
        r = await http.post("/graphql", json={"query": "query Q0($name: String!) { service(name: $name) "
                                              "{ name owner { team } } }", "variables": {"name": "api"}})
        assert answers.hits == 0  # Q0 was among the first to go


def test_an_answer_larger_than_an_eighth_of_the_bound_is_not_kept() -> None:
    cache = AnswerCache(800, lambda: (1, 2))
    key = cache.key(("POST", "", "application/json", "", b"{}"), NOW)
    assert key is not None
    assert not cache.put(key, Answered(b"x" * 100, "application/json", ("Q",)))
    assert cache.put(key, Answered(b"x" * 50, "application/json", ("Q",)))
    assert cache.get(key) is not None


def test_a_store_without_a_version_turns_the_cache_off() -> None:
    cache = AnswerCache(1024, lambda: None)
    assert cache.key(("POST", "", "application/json", "", b"{}"), NOW) is None


async def test_credentials_are_checked_before_any_kept_answer(stores: Stores, tmp_path: Path) -> None:
    """Who asks is not in the key (no answer depends on it); a request without the read scope never
    reaches the kept answers."""
    tokens = {"reader": new_token(), "collector": new_token(), "other-reader": new_token()}
    path = tmp_path / "tokens.jsonl"
    scopes = {"reader": ["read"], "collector": ["ingest"], "other-reader": ["read"]}
    write_tokens(path, {who: (tokens[who], scopes[who]) for who in tokens})
    app = create_app(stores, replace(CONFIG, tokens_file=str(path)), clock=lambda: NOW)
    body = {"query": Q, "variables": {"name": "api"}}
    async with client_of(app) as http:
        r = await http.post("/graphql", json=body, headers={"authorization": f"Bearer {tokens['reader']}"})
        assert r.status_code == 200 and "errors" not in r.json()
        assert len(app.state.answers) == 1
        for headers in ({}, {"authorization": f"Bearer {tokens['collector']}"},
                        {"authorization": "Bearer tpt_not-a-token"}):
            refused = await http.post("/graphql", json=body, headers=headers)
            assert refused.status_code in (401, 403), headers
            assert "upstream" not in refused.text
        assert app.state.answers.hits == 0
        r2 = await http.post("/graphql", json=body,
                             headers={"authorization": f"Bearer {tokens['other-reader']}"})
        assert r2.json() == r.json() and app.state.answers.hits == 1


async def test_no_cache_when_turned_off(stores: Stores) -> None:
    app = create_app(stores, replace(CONFIG, response_cache=0), clock=lambda: NOW)
    assert app.state.answers is None
    async with client_of(app) as http:
        for _ in range(2):
            r = await http.post("/graphql", json={"query": Q, "variables": {"name": "api"}})
            assert r.status_code == 200 and "errors" not in r.json()
