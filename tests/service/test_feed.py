"""Subscription.topologyChanges over graphql-transport-ws on a real uvicorn: what a subscriber of a
neighbourhood receives when stage 3 writes (windows in the store, then the feed's notification, as
Runtime.flush does), when health changes, when edges leave the live window; the bounds per
connection and per server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from service.app import create_app
from service.config import ServiceConfig
from tests.service.conftest import CONFIG
from tests.service.fleet import LIVE, NOW, _w
from tests.service.live import serving
from topology.catalog import HealthEvent, HealthState
from topology.model import Layer
from topology.store.base import Stores

PROTOCOL = "graphql-transport-ws"
CHANGES = """subscription($service: String, $depth: Int, $layers: [Layer!]) {
  topologyChanges(service: $service, depth: $depth, layers: $layers) {
    edgesAdded { source target layers perLayer { layer requests } }
    edgesRemoved { source target }
    nodes { name kind healthStatus { status } }
  }
}"""
WAIT = 15.0  # seconds for a message that must come (a notification wakes it within ~1 s)


class Live:
    """The app over the hand-built fleet with a clock the test moves; its WebSockets closed at the end
    (uvicorn waits for open connections before it stops)."""

    def __init__(self, stores: Stores, config: ServiceConfig = CONFIG) -> None:
        self.clock = [NOW]
        self.app = create_app(stores, config, clock=lambda: self.clock[0])
        self.stores = stores
        self.sockets: list[ClientConnection] = []

    @property
    def feed(self) -> Any:
        return self.app.state.feed

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        async with serving(self.app) as [port]:
            self.port = port
            try:
                yield port
            finally:
                for ws in self.sockets:
                    await ws.close()

    async def open_ws(self) -> ClientConnection:
        ws = await connect(f"ws://127.0.0.1:{self.port}/graphql", subprotocols=[PROTOCOL])
        self.sockets.append(ws)
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        return ws


async def subscribe(ws: ClientConnection, sid: str, **variables: Any) -> None:
    await ws.send(json.dumps({"id": sid, "type": "subscribe", "payload": {"query": CHANGES,
                                                                          "variables": variables}}))


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    return message


async def settled(live: Live) -> None:
    """Until every subscription has read its first snapshot (they count themselves when they start)."""
    for _ in range(100):
        await asyncio.sleep(0.05)
        if live.feed.active:
            break
    await asyncio.sleep(0.3)


@pytest.fixture
async def live(stores: Stores) -> AsyncIterator[Live]:
    yield Live(stores)


async def test_new_edges_and_health_reach_the_subscriber(live: Live) -> None:
    async with live.serving():
        ws = await live.open_ws()
        await subscribe(ws, "1", service="api", depth=1)
        await settled(live)
        # Stage 3 writes a new call api -> fraud-check (NETWORK) and the server's runtime notifies.
        await live.stores.layers[Layer.NETWORK].upsert_windows([_w(Layer.NETWORK, "api", "fraud-check")])
        live.feed.notify()
        msg = await receive(ws)
        assert msg["type"] == "next" and msg["id"] == "1"
        change = msg["payload"]["data"]["topologyChanges"]
        assert change["edgesAdded"] == [{"source": "api", "target": "fraud-check", "layers": ["NETWORK"],
                                         "perLayer": [{"layer": "NETWORK", "requests": 60}]}]
        assert change["edgesRemoved"] == []
        assert {n["name"] for n in change["nodes"]} == {"api", "fraud-check"}

        # auth (a callee of api) turns DEGRADED: only its health is news.
        await live.stores.catalog.record_health([HealthEvent("auth", HealthState.DEGRADED, NOW - 5)])
        live.feed.notify()
        change = (await receive(ws))["payload"]["data"]["topologyChanges"]
        assert change["edgesAdded"] == [] and change["edgesRemoved"] == []
        assert change["nodes"] == [{"name": "auth", "kind": "SERVICE",
                                    "healthStatus": {"status": "DEGRADED"}}]

        # An hour later nothing was seen since: every edge of the neighbourhood is gone.
        live.clock[0] = NOW + 3600
        live.feed.notify()
        change = (await receive(ws))["payload"]["data"]["topologyChanges"]
        assert {(e["source"], e["target"]) for e in change["edgesRemoved"]} == {
            ("api", "auth"), ("api", "orders"), ("api", "fraud-check"), ("edge-gateway", "api")}


async def test_writes_elsewhere_send_nothing(live: Live) -> None:
    async with live.serving():
        ws = await live.open_ws()
        await subscribe(ws, "1", service="api", depth=1, layers=["IPC"])
        await settled(live)
        # A NETWORK edge next to api (not a layer asked for) and an IPC edge far away: no message...
        await live.stores.layers[Layer.NETWORK].upsert_windows([_w(Layer.NETWORK, "api", "fraud-check")])
        await live.stores.layers[Layer.IPC].upsert_windows([_w(Layer.IPC, "ledger", "archive", start=LIVE)])
        live.feed.notify()
        # ...while an IPC call from api is one.
        await asyncio.sleep(1.5)
        await live.stores.layers[Layer.IPC].upsert_windows([_w(Layer.IPC, "api", "search")])
        live.feed.notify()
        change = (await receive(ws))["payload"]["data"]["topologyChanges"]
        assert [(e["source"], e["target"]) for e in change["edgesAdded"]] == [("api", "search")]


async def test_the_whole_graph_without_a_service(live: Live) -> None:
    async with live.serving():
        ws = await live.open_ws()
        await subscribe(ws, "1")
        await settled(live)
        await live.stores.layers[Layer.IPC].upsert_windows([_w(Layer.IPC, "ledger", "archive")])
        live.feed.notify()
        change = (await receive(ws))["payload"]["data"]["topologyChanges"]
        assert [(e["source"], e["target"]) for e in change["edgesAdded"]] == [("ledger", "archive")]


async def test_subscriptions_are_bounded(stores: Stores) -> None:
    live = Live(stores, replace(CONFIG, max_subscriptions=2, max_connection_subscriptions=1))
    async with live.serving():
        first = await live.open_ws()
        await subscribe(first, "1", service="api")
        await subscribe(first, "2", service="orders")  # a second one on the same connection
        msg = await receive(first)
        assert (msg["type"], msg["id"]) == ("next", "2")
        assert msg["payload"]["errors"][0]["extensions"] == {"code": "LIMIT_EXCEEDED", "limit": 1}
        second = await live.open_ws()
        await subscribe(second, "1", service="orders")
        await settled(live)
        assert live.feed.active == 2
        third = await live.open_ws()
        await subscribe(third, "1", service="auth")  # the server's limit
        msg = await receive(third)
        assert msg["payload"]["errors"][0]["extensions"] == {"code": "LIMIT_EXCEEDED", "limit": 2}
        # A closed connection gives its subscription back.
        await second.close()
        for _ in range(100):
            if live.feed.active == 1:
                break
            await asyncio.sleep(0.05)
        assert live.feed.active == 1


async def test_an_unknown_service_is_refused(live: Live) -> None:
    async with live.serving():
        ws = await live.open_ws()
        await subscribe(ws, "1", service="no-such-service")
        msg = await receive(ws)
        assert msg["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert await receive(ws) == {"id": "1", "type": "complete"}
        await subscribe(ws, "2", service="api", depth=0)
        msg = await receive(ws)
        assert msg["payload"]["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
