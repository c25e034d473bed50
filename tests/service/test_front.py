"""The ingest routes' short road (:mod:`service.front`) answers as the Starlette app behind it does.

Every request below is sent twice, once to the app ``create_app`` returns (the short road for ingest
POSTs) and once to the Starlette app behind it (routing and middleware), with authentication on: the
answers (status, body, headers) are the same, refusals included, and both count and dead-letter alike.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.front import IngestFront
from service.receiver import ingest_routes
from service.runtime import Runtime
from service.tokens import new_token
from tests.admission_cases import metrics, spans
from tests.service.conftest import CONFIG
from tests.service.fleet import NOW
from tests.service.test_auth import write_tokens
from topology.pipeline import Pipeline
from topology.store.base import Stores

PB = {"content-type": "application/x-protobuf"}
BASE = "http://127.0.0.1"


@dataclass
class Two:
    front: httpx.AsyncClient  # through the short road
    behind: httpx.AsyncClient  # the Starlette app alone
    app: Any
    runtime: Runtime
    token: str  # ingest and read scopes
    reader: str  # read scope only


@pytest.fixture
async def two(stores: Stores, tmp_path: Path) -> AsyncIterator[Two]:
    token, reader = new_token(), new_token()
    path = tmp_path / "tokens.jsonl"
    write_tokens(path, {"collector": (token, ["ingest", "read"]), "reader": (reader, ["read"])})
    config = replace(CONFIG, tokens_file=str(path), max_body=64 * 1024)
    runtime = Runtime(stores, tmp_path, Pipeline(), clock=lambda: NOW)
    app = create_app(stores, config, runtime=runtime, extra_routes=ingest_routes(runtime), clock=lambda: NOW)
    assert isinstance(app, IngestFront)
    async with (httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as front,
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url=BASE) as behind):
        yield Two(front, behind, app, runtime, token, reader)


def answer(r: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    return r.status_code, r.content, {k: v for k, v in r.headers.items() if k != "date"}


def _cases(two: Two) -> list[tuple[str, str, bytes, dict[str, str]]]:
    auth = {"authorization": f"Bearer {two.token}"}
    good_spans, good_metrics = spans((NOW - 2, NOW - 1)), metrics(NOW - 1)
    return [
        ("kept spans", "/v1/traces", good_spans, {**PB, **auth}),
        ("kept metrics", "/v1/metrics", good_metrics, {**PB, **auth}),
        ("spans as JSON", "/v1/traces", b'{"resourceSpans": []}',
         {"content-type": "application/json", **auth}),
        ("gzip", "/v1/traces", gzip.compress(good_spans), {**PB, **auth, "content-encoding": "gzip"}),
        ("bad gzip", "/v1/traces", b"not gzip", {**PB, **auth, "content-encoding": "gzip"}),
        ("an encoding not taken", "/v1/metrics", good_metrics, {**PB, **auth, "content-encoding": "br"}),
        ("bytes that do not decode", "/v1/traces", b"\xff\xff\xff", {**PB, **auth}),
        ("a cut-out metric resource", "/v1/metrics", metrics(NOW - 1, 4_102_444_800), {**PB, **auth}),
        ("no credentials", "/v1/traces", good_spans, PB),
        ("no credentials, JSON", "/v1/metrics", b"{}", {"content-type": "application/json"}),
        ("a bad token", "/v1/traces", good_spans, {**PB, "authorization": "Bearer nope"}),
        ("read scope only", "/v1/traces", good_spans, {**PB, "authorization": f"Bearer {two.reader}"}),
        ("a foreign origin", "/v1/traces", good_spans, {**PB, **auth, "origin": "https://evil.example"}),
        ("a form post", "/v1/traces", good_spans, {"content-type": "text/plain", **auth}),
        ("too large", "/v1/traces", bytes(65 * 1024), {**PB, **auth}),
        ("a gzip bomb", "/v1/traces", gzip.compress(bytes(1024 * 1024)),
         {**PB, **auth, "content-encoding": "gzip"}),
        ("flows that do not decode", "/ingest/flows", b"nope",
         {"content-type": "application/x-topology-flows", **auth}),
        ("catalog needs admin", "/ingest/catalog", b"[]", {"content-type": "application/json", **auth}),
    ]


async def test_the_same_answers_as_the_app_behind_it(two: Two) -> None:
    for name, path, body, headers in _cases(two):
        front = await two.front.post(path, content=body, headers=headers)
        behind = await two.behind.post(path, content=body, headers=headers)
        assert answer(front) == answer(behind), name


async def test_the_same_counts_and_dead_letters(two: Two) -> None:
    async def counts(http: httpx.AsyncClient) -> dict[str, Any]:
        for _, path, body, headers in _cases(two):
            await http.post(path, content=body, headers=headers)
        c = two.runtime.counters()
        return {k: dict(c[k]) for k in ("received", "accepted", "rejected", "records")}

    first = await counts(two.front)
    both = await counts(two.behind)
    assert {k: {kind: 2 * n for kind, n in v.items()} for k, v in first.items()} == both
    assert first["rejected"]  # refusals were counted


async def test_requests_are_counted_by_route_and_status(two: Two) -> None:
    auth = {"authorization": f"Bearer {two.token}"}
    for _ in range(3):
        assert (await two.front.post("/v1/traces", content=spans((NOW - 2, NOW - 1)), headers={**PB, **auth})
                ).status_code == 200
    assert (await two.front.post("/v1/traces", content=b"x", headers=PB)).status_code == 401
    text = (await two.front.get("/metrics", headers=auth)).text
    assert 'topology_http_requests_total{route="/v1/traces",status="2xx"} 3.0' in text
    assert 'topology_http_requests_total{route="/v1/traces",status="4xx"} 1.0' in text
    assert 'topology_http_request_duration_seconds_count{route="/v1/traces"} 4.0' in text


async def test_wait_and_other_methods_take_the_app(two: Two) -> None:
    auth = {"authorization": f"Bearer {two.token}"}
    r = await two.front.post("/v1/metrics?wait=true", content=b"\xff", headers={**PB, **auth})
    assert r.status_code == 400 and r.headers["topology-written"] == "false"  # the app's ?wait wrapper
    assert (await two.front.get("/v1/traces", headers=auth)).status_code == 405


async def test_a_failing_handler_is_a_500_with_a_reason_and_a_log_line(two: Two, caplog: Any) -> None:
    async def broken(read: Any, headers: Any) -> Any:
        raise RuntimeError("a bug")

    two.app.handlers["/v1/traces"] = broken
    auth = {"authorization": f"Bearer {two.token}"}
    r = await two.front.post("/v1/traces", content=b"x", headers={**PB, **auth})
    assert r.status_code == 500 and json.loads(r.content)["code"] == "INTERNAL"
    assert "a bug" not in r.text  # no traceback to the client
    assert any(rec.name == "service.front" and rec.exc_info for rec in caplog.records)
