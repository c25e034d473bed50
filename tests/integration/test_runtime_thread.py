"""The embedded runtime runs its pipeline off the event loop (service/runtime.py): a flush in progress
does not hold the loop, inputs accepted meanwhile wait for the next flush (in order, nothing lost), and
flushes write one at a time in call order."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from service.runtime import Runtime
from tests.admission_cases import flows, js
from topology.model import Granularity, Layer
from topology.pipeline import Pipeline, PipelineOutput
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange


class HeldPipeline(Pipeline):
    """A pipeline whose flushes wait until the test lets them go (``go``), saying when they start."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.go = threading.Event()
        self.flushed: list[float] = []

    def flush(self, now: float, trace: bool = True) -> PipelineOutput:
        self.started.set()
        assert self.go.wait(30), "the test never let the flush go"
        self.flushed.append(now)
        return super().flush(now, trace)


async def wait_for(event: threading.Event) -> None:
    for _ in range(3000):
        if event.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the flush never started")


async def test_a_flush_in_progress_leaves_the_loop_free_and_later_inputs_wait_for_the_next(
        tmp_path: Path) -> None:
    stores = open_stores(tmp_path / "store")
    pipe = HeldPipeline()
    rt = Runtime(stores, tmp_path, pipe)
    try:
        now = time.time()
        rt.accept_leases(js([{"ip": "10.2.0.2", "owner": "payments", "start": now - 3600}]))
        rt.accept_flows(flows(now, now - 300, now - 299))
        first = asyncio.create_task(rt.flush(now))
        await wait_for(pipe.started)  # the loop runs this while the flush is held in its thread
        ticks = 0
        for _ in range(3):
            await asyncio.sleep(0)
            ticks += 1
        assert not first.done() and ticks == 3
        rt.accept_flows(flows(now, now - 200, now - 199))  # accepted during the flush: queued
        assert len(rt._inbox) == 1
        second = asyncio.create_task(rt.flush(now + 1))
        await asyncio.sleep(0.05)
        assert pipe.flushed == []  # the second waits for the first
        pipe.go.set()
        await asyncio.gather(first, second)
        assert pipe.flushed == [now, now + 1] and not rt._inbox
        await rt.drain()
        edges = await stores.layers[Layer.NETWORK].edges(
            Granularity.APP, TimeRange(now - 3600, now + 3600), now + 3600)
        assert [(e.key.source, e.key.target, e.stats.connections) for e in edges] == [
            ("checkout", "payments", 2)], edges  # both batches, once each
        assert rt.written_seq == rt._queued
    finally:
        await stores.close()


class CountingPipeline(Pipeline):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self, now: float, trace: bool = True) -> PipelineOutput:
        self.flushes += 1
        return super().flush(now, trace)


async def test_an_idle_runtime_does_not_run_its_pipeline(tmp_path: Path) -> None:
    stores = open_stores(tmp_path / "store")
    pipe = CountingPipeline()
    rt = Runtime(stores, tmp_path, pipe)
    try:
        now = time.time()
        for i in range(3):  # nothing accepted yet: nothing to do
            await rt.flush(now + i)
        assert pipe.flushes == 0
        rt.accept_leases(js([{"ip": "10.2.0.2", "owner": "payments", "start": now - 3600}]))
        rt.accept_flows(flows(now, now - 300, now - 299))
        await rt.flush(now)  # the lease and the batch's window are applied and written
        assert pipe.flushes == 1
        await rt.flush(now + 1)  # past the batch's window and lateness: done
        assert pipe.flushes == 1
        rt.accept_flows(flows(now, now + 10, now + 11))  # a window still open: flushed until it closes
        await rt.flush(now + 2)
        await rt.flush(now + 3)
        assert pipe.flushes == 3
        await rt.drain()
        flushed = pipe.flushes
        await rt.flush(now + 3600)
        assert pipe.flushes == flushed  # everything was written by the drain
        windows = await stores.layers[Layer.NETWORK].window_count()
        assert sum(windows.values()) > 0
    finally:
        await stores.close()
