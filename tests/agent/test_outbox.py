"""Delivery: a sink that is down, then up (a real HTTP server on a real socket), a bounded buffer."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from agent.outbox import FLOWS, LEASES, Message, Outbox
from agent.sink import FLOWS_TYPE, HttpSink
from bench.agent_cost import Sink


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def port() -> Iterator[int]:
    yield free_port()


def start(port: int) -> Sink:
    srv = Sink(port, keep=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


async def until(predicate: object, within: float = 10.0) -> None:
    for _ in range(int(within / 0.05)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_sink_down_buffers_up_to_the_bound_counts_the_overflow_and_resumes(port: int) -> None:
    box = Outbox(HttpSink(f"http://127.0.0.1:{port}", timeout=2), max_bytes=3000, backoff_min=0.05,
                 backoff_max=0.2)
    sender = asyncio.create_task(box.run())
    box.put(Message(LEASES, b'[{"ip": "10.0.0.1"}]', 1))
    for i in range(5):  # 5 x 1000 bytes into a 3000-byte buffer: the two oldest batches go
        box.put(Message(FLOWS, bytes([i]) * 1000, 10))
    await until(lambda: box.errors >= 2)  # the sink is down: attempts fail and are retried
    assert box.dropped == {FLOWS: 3, LEASES: 0} and box.dropped_records[FLOWS] == 30
    assert len(box) == 3 and box.bytes <= 3000
    srv = start(port)
    try:
        await until(lambda: len(srv.requests) == 3)
        assert [(path, body[:1]) for path, _, body, _ in srv.requests] == [
            ("/ingest/addresses", b"["), ("/ingest/flows", b"\x03"), ("/ingest/flows", b"\x04")]
        assert srv.requests[1][1] == FLOWS_TYPE
        assert box.sent_records == {FLOWS: 20, LEASES: 1} and box.bytes == 0
        srv.reject = True  # a 400 is final: dropped and counted, the queue moves on
        box.put(Message(FLOWS, b"bad", 4))
        await until(lambda: box.rejected == 1)
        assert box.dropped_records[FLOWS] == 34 and len(box) == 0
    finally:
        sender.cancel()
        srv.shutdown()
        srv.server_close()


async def test_final_flush_delivers_or_counts(port: int) -> None:
    srv = start(port)
    try:
        box = Outbox(HttpSink(f"http://127.0.0.1:{port}", token="tpt_secret"), backoff_min=0.05)
        box.put(Message(FLOWS, b"x" * 10, 3))
        await box.drain(5.0)
        assert len(srv.requests) == 1 and box.sent_records[FLOWS] == 3
        assert srv.requests[0][3] == "Bearer tpt_secret"
    finally:
        srv.shutdown()
        srv.server_close()
    box = Outbox(HttpSink(f"http://127.0.0.1:{free_port()}", timeout=0.5), backoff_min=0.05)
    box.put(Message(LEASES, json.dumps([{"ip": "10.0.0.1"}]).encode(), 1))
    await box.drain(0.5)
    assert box.dropped_records == {FLOWS: 0, LEASES: 1} and len(box) == 0
