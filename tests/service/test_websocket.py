"""GraphQL over WebSocket (graphql-transport-ws) on /graphql, on a real uvicorn: reachable at all (the
route used to match HTTP only, so every handshake got 403), open to the listed origins and to
clients that send no Origin, closed to other web pages; with authentication on, a token in the
handshake or in ``connection_init``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from service.app import create_app
from service.tokens import new_token, token_line
from tests.service.conftest import CONFIG
from tests.service.fleet import NOW
from tests.service.live import serving
from topology.store.base import Stores

PROTOCOL = "graphql-transport-ws"
QUERY = "{ service(name: \"api\") { name } }"
ALLOWED = "https://ops.example"


async def init(ws: ClientConnection, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "connection_init", **({"payload": payload} if payload else {})}))
    answer: dict[str, Any] = json.loads(await ws.recv())
    return answer


async def run_query(ws: ClientConnection) -> dict[str, Any]:
    assert (await init(ws))["type"] == "connection_ack"
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": QUERY}}))
    answer: dict[str, Any] = json.loads(await ws.recv())
    assert answer["type"] == "next", answer
    assert json.loads(await ws.recv()) == {"id": "1", "type": "complete"}
    return answer


async def test_allowed_origins_and_non_browser_clients_connect(stores: Stores) -> None:
    app = create_app(stores, replace(CONFIG, allowed_origins=(ALLOWED,)), clock=lambda: NOW)
    async with serving(app) as [port]:
        url = f"ws://127.0.0.1:{port}/graphql"
        for origin in (ALLOWED, None):
            async with connect(url, subprotocols=[PROTOCOL], origin=origin) as ws:  # type: ignore[arg-type]
                assert ws.subprotocol == PROTOCOL
                answer = await run_query(ws)
                assert answer["payload"] == {"data": {"service": {"name": "api"}}}


async def test_a_foreign_origin_is_refused(stores: Stores) -> None:
    app = create_app(stores, replace(CONFIG, allowed_origins=(ALLOWED,)), clock=lambda: NOW)
    async with serving(app) as [port]:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{port}/graphql", subprotocols=[PROTOCOL],
                               origin="https://evil.example"):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403


async def test_with_authentication_a_token_in_the_handshake_or_in_connection_init(
        stores: Stores, tmp_path: Path) -> None:
    reader, collector = new_token(), new_token()
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text(token_line("reader", ["read"], reader) + "\n"
                      + token_line("collector", ["ingest"], collector) + "\n", encoding="utf-8")
    app = create_app(stores, replace(CONFIG, tokens_file=str(tokens)), clock=lambda: NOW)
    async with serving(app) as [port]:
        url = f"ws://127.0.0.1:{port}/graphql"
        async with connect(url, subprotocols=[PROTOCOL],
                           additional_headers={"authorization": f"Bearer {reader}"}) as ws:
            assert (await run_query(ws))["payload"]["data"]["service"]["name"] == "api"
        async with connect(url, subprotocols=[PROTOCOL]) as ws:  # browsers cannot set headers
            assert (await init(ws, {"Authorization": f"Bearer {reader}"}))["type"] == "connection_ack"
        for payload in (None, {"Authorization": f"Bearer {collector}"}, {"Authorization": "Bearer tpt_x"}):
            async with connect(url, subprotocols=[PROTOCOL]) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await init(ws, payload)
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        for header in (f"Bearer {collector}", "Bearer tpt_x"):  # bad credentials in the handshake
            with pytest.raises(InvalidStatus):
                async with connect(url, subprotocols=[PROTOCOL],
                                   additional_headers={"authorization": header}):
                    pass
