"""What a flush costs when little or nothing arrives (service/runtime.py, service/server.py): the flush
loop waits for the next input once everything accepted is written, and wakes for an input queued on
the loop or by another thread; uvicorn's clock loop wakes once a second and at once for a stop signal;
the span pairer is flushed every ``trace_every`` seconds only, and nothing it holds is left unwritten."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from service.runtime import Runtime
from service.server import _Server
from tests.admission_cases import _resource_spans, _span, flows, js, spans
from topology.model import Granularity, Layer
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange

PATIENCE = 30.0  # seconds; a safety net for a broken wake-up, never a measure of speed


def server_span(start: float) -> bytes:
    """A SERVER span of ``payments`` whose CLIENT parent never arrives."""
    req = ExportTraceServiceRequest()
    _span(_resource_spans(req, "payments"), b"\x0b" * 16, b"\x0c" * 8, b"\x0d" * 8, 2, start, start + 0.1)
    data: bytes = req.SerializeToString()
    return data


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


async def test_the_pairer_is_flushed_every_trace_every_seconds_and_nothing_is_left_behind(
        tmp_path: Path) -> None:
    stores = open_stores(tmp_path / "store")
    rt = Runtime(stores, tmp_path, trace_every=5.0)
    # 20 s into a minute, in the past: the spans' window is not the one a flush closes (the pairer
    # gives up the calls of a closing window at once, whatever trace_every says)
    now = time.time() // 60 * 60 - 40

    async def edges() -> set[tuple[str, str]]:
        found = await stores.layers[Layer.TRACE].edges(Granularity.APP, TimeRange(now - 120, now + 120),
                                                       now + 60)
        return {(e.key.source, e.key.target) for e in found}

    try:
        rt.accept_flows(flows(now, now - 30, now - 29))
        await rt.flush(now)  # the first flush flushes the pairer too
        rt.accept_spans(spans((now - 1, now - 0.9), pair=True), now=now + 0.5)
        await rt.flush(now + 1)  # within trace_every of the last: the pair waits in the pairer
        assert ("checkout", "payments") not in await edges()
        await rt.flush(now + 5)  # trace_every later: the new edge is written
        assert ("checkout", "payments") in await edges()
        rt.accept_spans(server_span(now + 5), now=now + 5.5)  # waits for a client that never comes
        assert not await rt.written(rt.request_due(), 0.0)
        t = now + 6
        while not rt.idle:  # the flush loop's flushes, until nothing is held
            t += 0.5
            await rt.flush(t)
        assert t >= now + 5.5 + 10 + 5  # the pairing wait and trace_every had passed
        assert ("user", "payments") in await edges()  # expired unanswered: a call from a user
    finally:
        await stores.close()
