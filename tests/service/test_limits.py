"""Bounded work per request (issue 8): body limits on every route, streaming decompression that stops
at the limit, the read timeout, ingest overload, and the GraphQL input limits and time budget.

The HTTP-layer tests drive the ASGI app directly with a ``receive`` channel that hands out the body
chunk by chunk and counts what was taken: the middleware must stop reading at the limit (a 1 GB
body is never read, let alone buffered). tests/integration/test_limits_server.py does the same to a
real ``topology serve`` and measures its memory.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.bounds import within_budget
from service.config import ConfigError, ServiceConfig
from service.front import IngestFront
from service.limits import RequestLimits, parse_size, show_size
from service.receiver import ingest_routes
from service.runtime import Runtime
from service.schema import build_schema
from tests.service.conftest import CONFIG
from tests.service.fleet import NOW
from topology.store.base import Stores

MiB = 1024 * 1024
CATALOG_CT = {"content-type": "application/json"}
ENTRY = [{"name": "limits-svc", "tier": 2, "owner": {"team": "t"}}]


@dataclass
class Exchange:
    """One request driven through the ASGI app: what it answered and how much body it took."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    pulls: int = 0  # receive() calls that took a body chunk
    pulled: int = 0  # body bytes taken

    def json(self) -> Any:
        return json.loads(self.body)


async def drive(app: Any, path: str, chunks: Iterator[bytes], headers: dict[str, str] | None = None,
                stall: asyncio.Event | None = None) -> Exchange:
    """POST ``chunks`` as a streamed body (``more_body`` until the iterator ends). With ``stall``, the
    body stops after the chunks until the event is set (a client that does not finish sending)."""
    out = Exchange()
    hdrs = [(k.lower().encode(), v.encode()) for k, v in {"host": "127.0.0.1", **(headers or {})}.items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": hdrs, "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8080)}
    pending = iter(chunks)
    nxt = next(pending, None)
    finished = False

    async def receive() -> dict[str, Any]:
        nonlocal nxt, finished
        if nxt is None:
            if stall is not None:
                await stall.wait()
            if finished:
                await asyncio.Event().wait()  # a real server's receive blocks until the client goes
            finished = True
            return {"type": "http.request", "body": b"", "more_body": False}
        chunk, nxt = nxt, next(pending, None)
        out.pulls += 1
        out.pulled += len(chunk)
        finished = nxt is None and stall is None
        return {"type": "http.request", "body": chunk, "more_body": not finished}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out.status = message["status"]
            out.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            out.body += message.get("body", b"")

    await app(scope, receive, send)
    return out


def zeros(total: int, chunk: int = MiB) -> Iterator[bytes]:
    block = bytes(chunk)
    for _ in range(total // chunk):
        yield block


def gzip_bomb(inflated: int) -> bytes:
    """``inflated`` zero bytes, gzipped (1 GB -> about 1 MB)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MiB)
    parts = [c.compress(block) for _ in range(inflated // MiB)]
    return b"".join([*parts, c.flush()])


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb(1024 * MiB)


@pytest.fixture
async def app(stores: Stores) -> AsyncIterator[Any]:
    yield app_for(stores, CONFIG)


def app_for(stores: Stores, config: ServiceConfig) -> Any:
    runtime = Runtime(stores, None)
    return create_app(stores, config, runtime=runtime, extra_routes=ingest_routes(runtime), clock=lambda: NOW)


async def refused(app: Any) -> dict[str, float]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        text = (await c.get("/metrics")).text
    out = {}
    for line in text.splitlines():
        if line.startswith("topology_http_refused_total{"):
            out[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
    return out


# -- body size -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/graphql", "/ingest/catalog", "/v1/traces"])
async def test_a_1_gb_chunked_body_is_refused_at_the_limit_without_reading_the_rest(app: Any,
                                                                                   path: str) -> None:
    limit = CONFIG.max_body if path != "/graphql" else CONFIG.max_request_body
    ex = await drive(app, path, zeros(1024 * MiB, 64 * 1024), CATALOG_CT)
    assert ex.status == 413
    assert ex.headers["connection"] == "close"
    assert ex.pulled <= limit + 64 * 1024  # one chunk past the limit, never the rest of the gigabyte
    body = ex.json()
    code = body["errors"][0]["extensions"]["code"] if path == "/graphql" else body["code"]
    message = body["errors"][0]["message"] if path == "/graphql" else body["error"]
    assert code == "REQUEST_TOO_LARGE" and message.startswith("limit: body larger than")
    assert (await refused(app))["limit"] == 1


async def test_a_declared_length_over_the_limit_is_refused_before_reading(app: Any) -> None:
    ex = await drive(app, "/graphql", zeros(2 * MiB), {"content-length": str(2 * MiB),
                                                       "content-type": "application/json"})
    assert (ex.status, ex.pulls) == (413, 0)


async def test_graphql_body_under_the_limit_is_answered(app: Any) -> None:
    doc = json.dumps({"query": "{ service(name: \"orders\") { name } }"}).encode()
    ex = await drive(app, "/graphql", iter([doc[:10], doc[10:]]), {"content-type": "application/json"})
    assert ex.status == 200 and ex.json() == {"data": {"service": {"name": "orders"}}}


# -- decompression ---------------------------------------------------------------------------------
async def test_a_gzip_bomb_stops_inflating_at_the_limit(stores: Stores, bomb: bytes) -> None:
    app = app_for(stores, replace(CONFIG, max_body=4 * MiB))
    assert len(bomb) < 2 * MiB
    ex = await drive(app, "/ingest/catalog", iter([bomb[i:i + 65536] for i in range(0, len(bomb), 65536)]),
                     {**CATALOG_CT, "content-encoding": "gzip"})
    assert ex.status == 413
    assert ex.json() == {"error": f"limit: decompressed body larger than {4 * MiB} bytes",
                         "code": "REQUEST_TOO_LARGE"}
    assert ex.pulls == 1  # its first 64 KB inflate past 4 MiB: the rest of the bomb is never read
    assert (await refused(app))["limit"] == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_body_reaches_the_route_inflated(app: Any, encoding: str) -> None:
    raw = json.dumps(ENTRY).encode()
    data = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    ex = await drive(app, "/ingest/catalog", iter([data[:7], data[7:]]), {**CATALOG_CT,
                                                                          "content-encoding": encoding})
    assert (ex.status, ex.json()) == (200, {"accepted": 1})


async def test_a_gzip_of_several_members_is_read_whole(app: Any) -> None:
    raw = json.dumps(ENTRY * 2).encode()
    data = gzip.compress(raw[:20]) + gzip.compress(raw[20:])
    ex = await drive(app, "/ingest/catalog", iter([data]), {**CATALOG_CT, "content-encoding": "gzip"})
    assert (ex.status, ex.json()) == (200, {"accepted": 2})


@pytest.mark.parametrize(("data", "why"), [(b"not gzip at all", "invalid"),
                                           (gzip.compress(b"[]" * 1000)[:-30], "truncated")])
async def test_a_body_that_is_not_valid_gzip_is_a_400(app: Any, data: bytes, why: str) -> None:
    ex = await drive(app, "/ingest/catalog", iter([data]), {**CATALOG_CT, "content-encoding": "gzip"})
    assert ex.status == 400
    assert ex.json()["code"] == "BAD_INPUT"
    assert ex.json()["error"].startswith("decode: body is not valid gzip")
    assert (why == "truncated") == ex.json()["error"].endswith("truncated")
    assert (await refused(app))["decode"] == 1


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=700),
       st.integers(min_value=1, max_value=4),
       st.sampled_from(["gzip", "deflate"]))
def test_streaming_inflate_equals_inflating_at_once_or_stops_at_the_limit(
    raw: bytes, cut: int, members: int, encoding: str
) -> None:
    from service.limits import Refused, _Inflater

    if encoding == "gzip":
        data = b"".join(gzip.compress(raw[i::members]) for i in range(members))
        whole = b"".join(raw[i::members] for i in range(members))
    else:
        data, whole = zlib.compress(raw), raw
    limit = max(1, len(whole) // 2) if cut % 3 == 0 else len(whole) + 1
    inflater = _Inflater(encoding, limit)
    try:
        out = b"".join(b"".join(inflater.feed(data[i:i + cut], limit)) for i in range(0, len(data), cut))
        inflater.finish()
    except Refused as r:
        assert r.reason == "limit" and len(whole) > limit
        return
    assert out == whole and len(whole) <= limit


# -- slow clients, overload ------------------------------------------------------------------------
async def test_a_client_that_stops_sending_its_body_is_cut_off(stores: Stores) -> None:
    app = app_for(stores, replace(CONFIG, read_timeout=0.2))
    never = asyncio.Event()
    ex = await asyncio.wait_for(drive(app, "/ingest/catalog", iter([b"[{"]), CATALOG_CT, stall=never), 30)
    assert ex.status == 408 and ex.json()["code"] == "REQUEST_TIMEOUT"
    assert (await refused(app))["timeout"] == 1


async def test_ingest_beyond_its_concurrency_is_429_with_retry_after(stores: Stores) -> None:
    app = app_for(stores, replace(CONFIG, max_ingest_requests=1, read_timeout=60))
    hold = asyncio.Event()
    first = asyncio.create_task(drive(app, "/ingest/catalog", iter([json.dumps(ENTRY).encode()]), CATALOG_CT,
                                      stall=hold))
    while limits_of(app) is None or limits_of(app).ingest_in_flight == 0:  # the first one holds its slot
        assert not first.done()
        await asyncio.sleep(0.01)
    second = await drive(app, "/ingest/catalog", iter([json.dumps(ENTRY).encode()]), CATALOG_CT)
    assert second.status == 429 and second.headers["retry-after"] == "1"
    assert second.json()["code"] == "OVERLOADED"
    hold.set()
    assert (await first).status == 200
    third = await drive(app, "/ingest/catalog", iter([json.dumps(ENTRY).encode()]), CATALOG_CT)
    assert third.status == 200  # the slot is free again
    assert (await refused(app))["overload"] == 1


def limits_of(app: Any) -> RequestLimits | None:
    if isinstance(app, IngestFront):  # the ingest routes' short road shares the app's limits
        return app.limits
    node = app.middleware_stack  # built at the first request
    while node is not None and not isinstance(node, RequestLimits):
        node = getattr(node, "app", None)
    return node


# -- GraphQL inputs --------------------------------------------------------------------------------
def entities_query(n: int) -> dict[str, Any]:
    return {"query": "query($r: [_Any!]!) { _entities(representations: $r) { ... on Service { name } } }",
            "variables": {"r": [{"__typename": "Service", "name": f"svc-{i}"} for i in range(n)]}}


LIST_QUERY = "query($t: [Int!]) { services(filter: {tier: $t}) { edges { node { name } } } }"


async def post(app: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        r = await c.post("/graphql", json=body)
    return r.status_code, r.json()


def code_of(answer: dict[str, Any]) -> tuple[str, str | None]:
    error = answer["errors"][0]
    return error["extensions"]["code"], error["extensions"].get("limit")


@pytest.mark.parametrize("body", [entities_query(100_000),
                                  {"query": LIST_QUERY, "variables": {"t": [1] * 2_000_000}},
                                  {"query": '{ service(name: "%s") { name } }' % ("x" * 10_000_000)}],
                         ids=["100k representations", "2M-element list", "10 MB string"])
async def test_floods_are_refused_by_the_default_body_limit(app: Any, body: dict[str, Any]) -> None:
    status, answer = await post(app, body)
    assert status == 413 and code_of(answer) == ("REQUEST_TOO_LARGE", None)


@pytest.fixture
def roomy(stores: Stores) -> Any:
    """A server whose body limit lets the floods through to the GraphQL limits."""
    return app_for(stores, replace(CONFIG, max_request_body=64 * MiB))


async def test_100_000_representations_are_refused_before_any_is_resolved(roomy: Any) -> None:
    status, answer = await post(roomy, entities_query(100_000))
    assert status == 200 and answer["data"] is None
    assert code_of(answer) == ("BAD_USER_INPUT", "entities")
    assert "at most 1000" in answer["errors"][0]["message"]
    status, answer = await post(roomy, entities_query(CONFIG.max_entities))
    assert "errors" not in answer and len(answer["data"]["_entities"]) == CONFIG.max_entities


async def test_a_2_million_element_list_variable_is_refused(roomy: Any) -> None:
    _, answer = await post(roomy, {"query": LIST_QUERY, "variables": {"t": [1] * 2_000_000}})
    assert code_of(answer) == ("BAD_USER_INPUT", "list") and answer["data"] is None
    _status, answer = await post(roomy, {"query": LIST_QUERY, "variables": {"t": [1] * CONFIG.max_list}})
    assert "errors" not in answer


async def test_long_strings_are_refused_in_literals_and_variables(roomy: Any) -> None:
    long = "x" * (CONFIG.max_string + 1)
    _, answer = await post(roomy, {"query": f'{{ service(name: "{long}") {{ name }} }}'})
    assert code_of(answer) == ("BAD_USER_INPUT", "string")
    _, answer = await post(roomy, {"query": "query($n: String!) { service(name: $n) { name } }",
                                   "variables": {"n": long}})
    assert code_of(answer) == ("BAD_USER_INPUT", "string")
    _, answer = await post(roomy, {"query": f'{{ service(name: "{long[1:]}") {{ name }} }}'})
    assert answer["data"] == {"service": None}  # an unknown name, not a refused one
    assert not [e for e in answer.get("errors", []) if "limit" in e["extensions"]]


async def test_literal_representations_have_their_own_limit(stores: Stores) -> None:
    app = app_for(stores, replace(CONFIG, max_entities=10, max_list=3))
    doc = "{ _entities(representations: [%s]) { ... on Service { name } } }"
    _, answer = await post(app, {"query": doc % ",".join(['{__typename: "Service", name: "orders"}'] * 11)})
    assert code_of(answer) == ("BAD_USER_INPUT", "entities")
    _, answer = await post(app, {"query": doc % ",".join(['{__typename: "Service", name: "orders"}'] * 10)})
    assert answer == {"data": {"_entities": [{"name": "orders"}] * 10}}


async def test_a_long_literal_list_is_refused(roomy: Any) -> None:
    tiers = ",".join(["1"] * (CONFIG.max_list + 1))
    document = f"{{ services(filter: {{tier: [{tiers}]}}) {{ edges {{ node {{ name }} }} }} }}"
    _, answer = await post(roomy, {"query": document})
    assert code_of(answer) == ("BAD_USER_INPUT", "list")


async def test_deeply_nested_variables_cost_no_stack(roomy: Any) -> None:
    nested: Any = "x"
    for _ in range(100_000):
        nested = [nested]
    from service.bounds import check_variables

    check_variables({"v": nested}, set(), 10, 10, 10)  # walked without recursion: no RecursionError


async def test_an_operation_over_its_time_budget_is_a_timeout_error() -> None:
    codes: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(60)

    result = await within_budget(slow, 0.05, codes.append)
    assert result.data is None and result.errors[0].extensions == {"code": "TIMEOUT"}
    assert codes == ["TIMEOUT"]
    assert build_schema(replace(CONFIG, operation_timeout=7.0)).budget == 7.0  # type: ignore[attr-defined]


# -- settings --------------------------------------------------------------------------------------
def test_limit_settings_are_read_and_checked() -> None:
    c = ServiceConfig.from_env({"TOPOLOGY_MAX_BODY": "16MiB", "TOPOLOGY_MAX_REQUEST_BODY": "256KiB",
                                "TOPOLOGY_READ_TIMEOUT": "5s", "TOPOLOGY_MAX_INGEST_REQUESTS": "3",
                                "TOPOLOGY_MAX_ENTITIES": "50", "TOPOLOGY_MAX_LIST": "20",
                                "TOPOLOGY_MAX_STRING": "300", "TOPOLOGY_OPERATION_TIMEOUT": "2m"})
    assert (c.max_body, c.max_request_body, c.read_timeout, c.max_ingest_requests, c.max_entities, c.max_list,
            c.max_string, c.operation_timeout) == (16 * MiB, 256 * 1024, 5.0, 3, 50, 20, 300, 120.0)
    for env in ({"TOPOLOGY_MAX_BODY": "lots"}, {"TOPOLOGY_MAX_BODY": "0"}, {"TOPOLOGY_MAX_LIST": "0"},
                {"TOPOLOGY_READ_TIMEOUT": "0s"}):
        with pytest.raises(ConfigError, match=next(iter(env))):
            ServiceConfig.from_env(env)


@pytest.mark.parametrize(("text", "n"), [("1048576", MiB), ("64MiB", 64 * MiB), ("1MB", 10**6),
                                         ("512kib", 512 * 1024),
                                         ("2GiB", 2 * 1024 * MiB)])
def test_sizes(text: str, n: int) -> None:
    assert parse_size(text) == n
    assert parse_size(show_size(n)) == n
