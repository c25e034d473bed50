"""The server around the app: /readyz waits for the demo's data; the listening socket is bound first."""

from __future__ import annotations

import socket

import pytest

from service.server import _listen
from tests.service.conftest import client_for
from topology.store.base import Stores


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
