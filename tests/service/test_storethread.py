"""GraphQL on the stores' own thread (service/storethread.py): the stores are opened on that thread's
loop and used only there; operations over HTTP and ``/export`` execute there and answer what they
answer on one loop; the server's loop reaches the stores through ``bind``."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.storethread import StoreThread
from tests.service.conftest import client_for
from tests.service.fleet import fill
from topology.model import Layer
from topology.store.base import Stores
from topology.store.embedded import open_stores

QUERY = """{ service(name: "api") { name owner { team }
  upstream(depth: 2) { totalCount edges { node { depth service { name } } } } } }"""


@pytest.fixture
async def owned(tmp_path: Path) -> AsyncIterator[tuple[StoreThread, Stores]]:
    thread = StoreThread()

    async def opened() -> Stores:
        s = open_stores(tmp_path / "store")
        await fill(s)
        return s

    stores = await thread.run(opened())
    try:
        yield thread, stores
    finally:
        await thread.bind(stores).close()
        thread.stop()


def record_threads(stores: Stores, seen: set[str]) -> None:
    """Note the thread every catalog ``services`` call runs on."""
    inner = stores.catalog.services

    async def services(*args: Any, **kwargs: Any) -> Any:
        seen.add(threading.current_thread().name)
        return await inner(*args, **kwargs)

    stores.catalog.services = services  # type: ignore[method-assign]


async def test_operations_execute_on_the_store_thread_and_answer_as_on_one_loop(
        owned: tuple[StoreThread, Stores], tmp_path: Path) -> None:
    thread, stores = owned
    seen: set[str] = set()
    record_threads(stores, seen)
    async with client_for(stores, store_thread=thread) as http:
        threaded = (await http.post("/graphql", json={"query": QUERY})).json()
        exported = await http.get("/export", params={"format": "json", "service": "api"})
        ready = await http.get("/readyz")
    assert seen == {"topology-stores"}  # never the test's (the server's) loop
    assert ready.status_code == 200 and ready.json()["status"] == "ok"

    single = open_stores(tmp_path / "single")
    try:
        await fill(single)
        async with client_for(single) as http:
            expected = (await http.post("/graphql", json={"query": QUERY})).json()
            export_expected = await http.get("/export", params={"format": "json", "service": "api"})
    finally:
        await single.close()
    assert "errors" not in threaded and threaded == expected
    assert threaded["data"]["service"]["upstream"]["totalCount"] > 0
    assert exported.status_code == 200 and exported.json() == export_expected.json()


async def test_bound_stores_run_every_call_on_the_thread(owned: tuple[StoreThread, Stores]) -> None:
    thread, stores = owned
    seen: set[str] = set()
    record_threads(stores, seen)
    bound = thread.bind(stores)
    assert (await bound.catalog.services(["api"]))["api"].name == "api"
    assert sum((await bound.layers[Layer.NETWORK].window_count()).values()) > 0
    assert seen == {"topology-stores"}


async def test_a_query_refused_on_the_thread_is_still_an_answer(owned: tuple[StoreThread, Stores]) -> None:
    thread, stores = owned
    async with client_for(stores, store_thread=thread) as http:
        r = await http.post("/graphql", json={"query": "{ service(name: 5) { name } }"})
        missing = await http.post("/graphql", json={"query": '{ service(name: "nope") { name } }'})
    assert r.status_code == 200 and r.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert missing.json()["data"]["service"] is None


def test_stop_ends_the_thread() -> None:
    thread = StoreThread(name="short-lived")
    assert any(t.name == "short-lived" for t in threading.enumerate())
    thread.stop()
    assert not any(t.name == "short-lived" for t in threading.enumerate())
    assert thread.loop.is_closed()
    thread.stop()  # twice is harmless


async def test_an_error_on_the_thread_reaches_the_caller() -> None:
    thread = StoreThread()
    try:
        async def fails() -> None:
            raise ValueError("on the thread")

        with pytest.raises(ValueError, match="on the thread"):
            await thread.run(fails())
    finally:
        thread.stop()

