"""The server around the app: /readyz waits for the demo's data; the listening socket is bound first."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.config import ServiceConfig
from service.demo import SimulationDriver
from service.runtime import Runtime
from service.server import _listen
from tests.service.conftest import client_for
from topology.pipeline import Pipeline
from topology.store.base import Stores
from topology.store.embedded import open_stores

LIVE_EDGES = "{ topology(first: 1000) { edges { source target } } }"


async def test_readyz_is_not_ready_while_the_data_is_loading(stores: Stores) -> None:
    loaded = False
    async with client_for(stores, data_ready=lambda: loaded) as http:
        r = await http.get("/readyz")
        assert r.status_code == 503
        assert r.json()["data"] == "loading" and r.json()["status"] == "unavailable"
        assert set(r.json()["stores"].values()) == {"ok"}  # the stores themselves answer
        loaded = True
        r = await http.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "ok" and "data" not in r.json()


async def test_readyz_without_a_data_check_follows_the_stores(stores: Stores) -> None:
    async with client_for(stores) as http:
        assert (await http.get("/readyz")).status_code == 200


def test_a_port_in_use_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}: "):
            _listen("127.0.0.1", port)
    free = _listen("127.0.0.1", 0)
    free.close()


async def test_connections_on_the_listening_socket_send_without_delay() -> None:
    """Nagle off on every accepted connection (asyncio sets TCP_NODELAY only where the socket's proto
    says TCP): with it on, each answer on a kept-alive connection after the first waited for the
    client's delayed ACK, ~40 ms."""
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=_listen("127.0.0.1", 0))
    try:
        _, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        assert await asyncio.wait_for(accepted, 10) != 0
        writer.close()
    finally:
        server.close()


async def test_the_demo_is_ready_once_its_live_map_answers(tmp_path: Path) -> None:
    """The fleet runs in a child process (service.demo_fleet); its output is stored here."""
    stores = open_stores(tmp_path / "demo")
    runtime = Runtime(stores, None, Pipeline())
    truth_file = tmp_path / "truth.json"
    driver = SimulationDriver(20, 3, runtime, step=5.0, backfill=120.0, truth=str(truth_file))
    app = create_app(stores, ServiceConfig(), runtime=runtime, data_ready=driver.ready.is_set)
    task: asyncio.Task[None] | None = None
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            assert (await http.get("/readyz")).status_code == 503  # the stores answer, the map is empty
            task = asyncio.create_task(driver.run())
            await asyncio.wait_for(driver.ready.wait(), 120)
            assert (await http.get("/readyz")).status_code == 200
            body = (await http.post("/graphql", json={"query": LIVE_EDGES})).json()
            assert "errors" not in body, body
            edges = {(e["source"], e["target"]) for e in body["data"]["topology"]["edges"]}
            truth = {tuple(pair) for pair in json.loads(truth_file.read_text())["unified"]}
            assert edges and edges <= truth  # the live map answers, with edges that carried traffic
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await stores.close()
