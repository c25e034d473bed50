"""An idle server does nothing (service/runtime.py, service/server.py): the flush loop waits for the
next input once everything accepted is written, and wakes for an input queued on the loop or by
another thread; uvicorn's clock loop wakes once a second and at once for a stop signal."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import uvicorn

from service.runtime import Runtime
from service.server import _Server
from tests.admission_cases import flows, js
from topology.store.embedded import open_stores

PATIENCE = 30.0  # seconds; a safety net for a broken wake-up, never a measure of speed


async def test_the_flush_loop_waits_while_idle_and_wakes_for_an_input(tmp_path: Path) -> None:
    stores = open_stores(tmp_path / "store")
    rt = Runtime(stores, tmp_path)
    try:
        assert rt.idle  # nothing accepted
        waiting = asyncio.create_task(rt.until_input(3600))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()  # idle: it waits (for up to an hour)
        now = time.time()
        rt.accept_flows(flows(now, now - 30, now - 29))
        await asyncio.wait_for(waiting, PATIENCE)  # woken by the input
        assert not rt.idle
        await rt.until_input(3600)  # returns at once while something is held
        await rt.drain()  # every window written: idle again
        assert rt.idle
    finally:
        await stores.close()


async def test_an_input_queued_by_another_thread_wakes_the_flush_loop(tmp_path: Path) -> None:
    stores = open_stores(tmp_path / "store")
    rt = Runtime(stores, tmp_path)
    try:
        waiting = asyncio.create_task(rt.until_input(3600))
        for _ in range(5):
            await asyncio.sleep(0)
        lease = js([{"ip": "10.2.0.2", "owner": "payments", "start": time.time() - 3600}])
        feeder = threading.Thread(target=rt.accept_leases, args=(lease,))
        feeder.start()
        feeder.join()
        await asyncio.wait_for(waiting, PATIENCE)
        assert not rt.idle
        await rt.flush()
        assert rt.idle  # leases have no window to wait for
    finally:
        await stores.close()


async def test_until_input_gives_up_after_its_time(tmp_path: Path) -> None:
    stores = open_stores(tmp_path / "store")
    rt = Runtime(stores, tmp_path)
    try:
        await asyncio.wait_for(rt.until_input(0.01), PATIENCE)  # a rollup's turn: returns, still idle
        assert rt.idle
    finally:
        await stores.close()


async def test_the_server_loop_stops_at_once_on_a_signal() -> None:
    server = _Server(uvicorn.Config(lambda scope, receive, send: None, log_config=None))
    server.TICK = 3600.0  # only the signal can end the wait
    loop = asyncio.create_task(server.main_loop())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not loop.done()
    server.handle_exit(signal.SIGTERM, None)
    await asyncio.wait_for(loop, PATIENCE)
    assert server.should_exit
    assert server.server_state.default_headers[0][0] == b"date"  # the Date header is renewed
