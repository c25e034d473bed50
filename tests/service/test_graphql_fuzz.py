"""Schema-driven fuzzing of ``/graphql`` (issue 8): documents generated from the served schema by
``hypothesis-graphql`` - valid ones (``Mode.POSITIVE``) and ones with one schema violation each
(``Mode.NEGATIVE``), with and without odd scalars - are POSTed to the real ASGI app over the
hand-built fleet. Whatever comes back, no answer is a 500, every error carries ``extensions.code``
and none is ``INTERNAL_SERVER_ERROR``. Request bodies that are not GraphQL at all (not UTF-8, not
JSON, ``null``, nested deep, chained fragments) get a GraphQL-shaped 400 or error with a code.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import graphql
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema

from service.app import create_app
from service.schema import build_schema
from tests.service.conftest import CONFIG
from tests.service.fleet import NOW, fill
from topology.store.embedded import open_stores

SCHEMA = build_schema(CONFIG)._schema  # graphql-core's schema: the SDL file's federation directives
NAMES = st.sampled_from(["api", "payments", "orders", "nobody", ""])  # fleet.py names and unknown ones


def _string(values: st.SearchStrategy[str]) -> st.SearchStrategy[graphql.StringValueNode]:
    return values.map(lambda v: graphql.StringValueNode(value=v))


SCALARS = {
    "DateTime": _string(st.one_of(
        st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
        .map(lambda d: d.isoformat()), st.text(max_size=30))),
    "Duration": st.one_of(_string(st.sampled_from(["15m", "1h30m", "PT15M", "7d", "0s", "-5m", "x"])),
                          st.integers(-10, 10**9).map(lambda n: graphql.IntValueNode(value=str(n)))),
    "Long": st.integers(-(2**70), 2**70).map(lambda n: graphql.IntValueNode(value=str(n))),
    "_Any": st.builds(
        lambda name: graphql.ObjectValueNode(fields=(
            graphql.ObjectFieldNode(name=graphql.NameNode(value="__typename"),
                                    value=graphql.StringValueNode(value="Service")),
            graphql.ObjectFieldNode(name=graphql.NameNode(value="name"),
                                    value=graphql.StringValueNode(value=name)),
        )), NAMES),
}


class App:
    """The app over the filled embedded store, on one event loop for every example."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.stores = open_stores(tmp / "store")
        self.loop.run_until_complete(fill(self.stores))
        app = create_app(self.stores, CONFIG, clock=lambda: NOW)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                        base_url="http://testserver")

    def post(self, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post("/graphql", **kwargs))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.stores.close())
        self.loop.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    a = App(tmp_path_factory.mktemp("fuzz"))
    yield a
    a.close()


def assert_coded(r: httpx.Response) -> dict[str, Any]:
    """No 500; a JSON answer whose errors all have a code other than INTERNAL_SERVER_ERROR."""
    assert r.status_code in (200, 400, 413), (r.status_code, r.text[:500])
    body: dict[str, Any] = r.json()
    for e in body.get("errors") or ():
        code = (e.get("extensions") or {}).get("code")
        assert isinstance(code, str) and code != "INTERNAL_SERVER_ERROR", e
    if r.status_code != 200:
        assert body.get("errors"), body
    return body


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(document=from_schema(SCHEMA, custom_scalars=SCALARS))
def test_generated_valid_documents_answer_without_internal_errors(app: App, document: str) -> None:
    assert_coded(app.post(json={"query": document}))


@FUZZ
@given(document=from_schema(SCHEMA, custom_scalars=SCALARS, mode=Mode.NEGATIVE))
def test_generated_invalid_documents_answer_with_a_code(app: App, document: str) -> None:
    body = assert_coded(app.post(json={"query": document}))
    assert body.get("errors"), body  # one schema violation each: never a clean answer


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(st.binary(max_size=200), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["query", "variables", "operationName", "extensions", "x"]), inner, max_size=4),
    max_leaves=10).map(lambda v: json.dumps(v).encode())))
def test_any_body_answers_graphql_shaped(app: App, body: bytes) -> None:
    assert_coded(app.post(content=body, headers={"content-type": "application/json"}))


@pytest.mark.parametrize(("body", "fragment"), [
    (b"\xff\xfe\x00", "the body is not"), (b'{"query": "{ \xff }"}', "not UTF-8"), (b"{x", "not JSON"),
    (b"null", "JSON object"), (b'"query"', "JSON object"),
    (b"[" * 100_000, "nested too deeply"), (b'{"query": null}', "No GraphQL query"),
    (b'{"query": "{ __typename }", "variables": 5}', "variables"),
])
def test_bodies_that_are_not_graphql_requests_are_400_with_a_reason_and_code(
        app: App, body: bytes, fragment: str) -> None:
    r = app.post(content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    [error] = r.json()["errors"]
    assert fragment in error["message"] and error["extensions"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize("chain", [250, 1000])
def test_chained_fragments_answer_an_error_with_a_code(app: App, chain: int) -> None:
    """~250 fragments each spreading the next exhausted graphql-core's recursion: the error had no code."""
    frags = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(chain))
    document = f"query {{ ...F0 }} {frags} fragment F{chain} on Query {{ __typename }}"
    body = assert_coded(app.post(json={"query": document}))
    assert body["errors"] and body.get("data") is None


def test_a_valid_document_still_answers(app: App) -> None:
    body = assert_coded(app.post(json={"query": '{ service(name: "payments") { name tier } }'}))
    assert body == {"data": {"service": {"name": "payments", "tier": 0}}}
