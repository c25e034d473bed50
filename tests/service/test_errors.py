"""Limits and errors: every error carries ``extensions.code``; internals never reach the client."""

from __future__ import annotations

from typing import Any

import pytest

from tests.service.conftest import CONFIG, Client, client_for
from topology.model import Layer
from topology.store.base import Stores


def codes(out: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in out.get("errors", [])]


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ("depth: 11", "depth"),
        ("depth: 0", "depth"),
        ("first: 1001", "first"),
        ("first: -1", "first"),
        ("layers: []", "layers"),
        ("tier: []", "tier"),
        ('window: "500d"', "window"),
        ('after: "not-a-cursor"', "after"),
    ],
)
async def test_bad_arguments_are_bad_user_input(client: Client, arguments: str, argument: str) -> None:
    out = await client.query(f'{{ service(name: "api") {{ name upstream({arguments}) {{ totalCount }} }} }}')
    assert codes(out) == ["BAD_USER_INPUT"]
    assert out["errors"][0]["extensions"]["argument"] == argument
    assert out["errors"][0]["path"] == ["service", "upstream"]
    assert out["data"] == {"service": None}  # upstream is non-null: the error nulls the service


async def test_the_limits_follow_the_configuration(stores: Stores) -> None:
    from dataclasses import replace

    async with client_for(stores, replace(CONFIG, max_depth=2, max_page=5, default_page=5)) as http:
        c = Client(http)
        assert codes(await c.query('{ service(name: "api") { upstream(depth: 3) { totalCount } } }')) == [
            "BAD_USER_INPUT"]
        out = await c.query('{ services(first: 6) { pageInfo { hasNextPage } } }')
        assert codes(out) == ["BAD_USER_INPUT"]
        ok = await c.data('{ service(name: "api") { upstream(depth: 2) { totalCount } } }')
        assert ok["service"]["upstream"]["totalCount"] == 4


async def test_blast_radius_and_topology_check_their_arguments(client: Client) -> None:
    out = await client.query('{ blastRadius(name: "api", depth: 42) { total } }')
    assert codes(out) == ["BAD_USER_INPUT"] and out["data"] == {"blastRadius": None}
    out = await client.query('{ topology(first: 5000) { truncated } }')
    assert codes(out) == ["BAD_USER_INPUT"]


async def test_a_cursor_of_another_list_is_refused(client: Client) -> None:
    d = await client.data("{ services(first: 1) { pageInfo { endCursor } } }")
    cursor = d["services"]["pageInfo"]["endCursor"]
    out = await client.query('query($a: String) { topology(after: $a) { truncated } }', {"a": cursor})
    assert codes(out) == ["BAD_USER_INPUT"]


async def test_malformed_durations(client: Client) -> None:
    doc = 'query($w: Duration) { service(name: "api") { upstream(window: $w) { totalCount } } }'
    for bad in ("bogus", "-5m", 0, -3):
        out = await client.query(doc, {"w": bad})
        assert codes(out) == ["BAD_USER_INPUT"], (bad, out)
    out = await client.query('{ service(name: "api") { upstream(window: "soon") { totalCount } } }')
    assert codes(out) == ["GRAPHQL_VALIDATION_FAILED"]
    assert "not a duration" in out["errors"][0]["message"]


async def test_documents_beyond_the_limits_are_refused(client: Client) -> None:
    nested = "name"
    for _ in range(8):
        nested = f"upstream {{ edges {{ node {{ service {{ {nested} }} }} }} }}"
    out = await client.query(f'{{ service(name: "api") {{ {nested} }} }}')
    assert codes(out) == ["GRAPHQL_VALIDATION_FAILED"] and "depth" in out["errors"][0]["message"]

    aliases = " ".join(f"a{i}: name" for i in range(51))
    out = await client.query(f'{{ service(name: "api") {{ {aliases} }} }}')
    assert codes(out) == ["GRAPHQL_VALIDATION_FAILED"] and "aliases" in out["errors"][0]["message"]

    many = " ".join("name" for _ in range(5001))
    out = await client.query(f'{{ service(name: "api") {{ {many} }} }}')
    assert codes(out) == ["GRAPHQL_PARSE_FAILED"]


async def test_syntax_and_validation_errors(client: Client) -> None:
    assert codes(await client.query("{ service(name: ")) == ["GRAPHQL_PARSE_FAILED"]
    out = await client.query('{ service(name: "api") { nam } }')
    assert codes(out) == ["GRAPHQL_VALIDATION_FAILED"]
    assert "Did you mean" not in out["errors"][0]["message"]  # no schema hints for strangers


class _Failing:
    """Delegates to a real store; the named method raises an unexpected error."""

    def __init__(self, inner: Any, method: str) -> None:
        self._inner, self._method = inner, method

    def __getattr__(self, name: str) -> Any:
        if name == self._method:
            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("secret: password=hunter2")

            return fail
        return getattr(self._inner, name)


async def test_unexpected_errors_are_masked(stores: Stores, caplog: pytest.LogCaptureFixture) -> None:
    broken = Stores(layers=stores.layers, catalog=_Failing(stores.catalog, "recent_traces"))  # type: ignore[arg-type]
    async with client_for(broken) as http:
        doc = '{ service(name: "orders") { name traces { traceId } } }'
        r = await http.post("/graphql", json={"query": doc})
    out = r.json()
    assert out["data"] == {"service": None}
    (error,) = out["errors"]
    assert error["message"] == "Internal server error."
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
    assert "hunter2" not in r.text
    logged = [r.exc_info[1] for r in caplog.records if r.name == "service.errors" and r.exc_info]
    assert [str(e) for e in logged] == ["secret: password=hunter2"]  # the details go to the log only


async def test_a_layer_raising_anything_is_unavailable_without_internals(stores: Stores) -> None:
    layers = dict(stores.layers)
    layers[Layer.NETWORK] = _Failing(layers[Layer.NETWORK], "neighbors")  # type: ignore[assignment]
    async with client_for(Stores(layers=layers, catalog=stores.catalog)) as http:
        r = await http.post("/graphql", json={"query": '{ service(name: "api") { upstream { edges { node '
                                                       '{ service { name } } } } } }'})
    out = r.json()
    assert [e["node"]["service"]["name"] for e in out["data"]["service"]["upstream"]["edges"]] == ["orders"]
    (error,) = out["errors"]
    assert error["extensions"] == {"code": "UNAVAILABLE", "layer": "NETWORK"}
    assert "hunter2" not in r.text
