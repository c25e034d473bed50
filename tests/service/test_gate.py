"""The line GraphQL requests wait in (service/gate.py): a few execute at once, a bounded number wait,
first come first served, and one more is answered 503 with ``Retry-After`` and ``extensions.code``."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.gate import Overloaded, QueryGate
from tests.service.conftest import CONFIG
from topology.store.base import Stores


async def until(condition: Any) -> None:
    """Let the loop run until ``condition()`` holds (a bounded number of turns)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_two_run_two_wait_in_order_and_the_fifth_is_refused() -> None:
    gate = QueryGate(running=2, queued=2)
    release = asyncio.Event()
    order: list[int] = []

    async def op(i: int) -> None:
        async with gate.slot():
            order.append(i)
            await release.wait()

    tasks = [asyncio.create_task(op(i)) for i in range(4)]
    await until(lambda: gate.waiting == 2)
    assert order == [0, 1]  # two run, two wait
    with pytest.raises(Overloaded, match="2 GraphQL requests are waiting"):
        async with gate.slot():
            pass
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3] and gate.waiting == 0
    async with gate.slot(), gate.slot():  # every slot was given back
        assert gate.waiting == 0


async def one_running_one_waiting(gate: QueryGate, hold: asyncio.Event) -> tuple[asyncio.Task[None], ...]:
    """Two operations that hold their slot until ``hold``: the first runs, the second waits."""
    async def holder() -> None:
        async with gate.slot():
            await hold.wait()

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    second = asyncio.create_task(holder())
    await until(lambda: gate.waiting == 1)
    return first, second


async def test_a_waiter_that_gives_up_leaves_the_line_and_its_place() -> None:
    gate = QueryGate(running=1, queued=1)
    hold = asyncio.Event()
    first, waiter = await one_running_one_waiting(gate, hold)
    waiter.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting == 0
    hold.set()
    await first
    async with gate.slot():
        pass


def graphql_view(app: Any) -> Any:
    return next(r.app for r in app.routes if getattr(r, "path", None) == "/graphql" and hasattr(r, "methods"))


async def test_a_full_line_answers_503_with_retry_after_and_a_code(stores: Stores) -> None:
    app = create_app(stores, replace(CONFIG, max_queries=1, max_queued_queries=1))
    gate: QueryGate = graphql_view(app)._gate
    hold = asyncio.Event()
    running, queued = await one_running_one_waiting(gate, hold)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        r = await c.post("/graphql", json={"query": "{ services(first: 1) { edges { node { name } } } }"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
        hold.set()
        await asyncio.gather(running, queued)
        r = await c.post("/graphql", json={"query": "{ services(first: 1) { edges { node { name } } } }"})
        assert r.status_code == 200 and "errors" not in r.json()
        metrics = (await c.get("/metrics")).text
    assert 'code="UNAVAILABLE"' in metrics
