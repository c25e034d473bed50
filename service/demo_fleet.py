"""The demo's simulated fleet in a process of its own: simulator, admission and pipeline.

Why a process: at 10,000 services the fleet's traffic keeps a pipeline busy all the time while the
live map catches up and while the history fills (both as fast as the CPU allows). In the server's
process that work held the interpreter lock ~74 % of the time (py-spy ``--gil``), and a query waited
for the lock at every turn (Q1 p50 78-103 ms, p99 444-620 ms: ``docs/benchmarks.md``). Here it runs
in a child process (:mod:`multiprocessing`, spawned), on the road every input takes: each payload
passes the admission of a :class:`service.runtime.Runtime` (:mod:`topology.admit`) into the same
:class:`topology.pipeline.Pipeline`, and what a flush produces is sent to the server, which writes it
with :meth:`service.runtime.Runtime.write` (:func:`topology.store.persist.persist`, then the
live-update listeners). The server's process keeps the stores, their writes and the queries
(:class:`service.demo.SimulationDriver`). Two more things keep a query from waiting behind the fleet:
the child runs at a lower CPU priority (:data:`NICE`: on a busy machine the server's threads get a
core first; on idle cores the fleet runs as fast), and a flush's output travels in parts of at most
:data:`PART` windows, each written in one stretch of the server's stores' thread, where a query
waits until the stretch ends (measured in ``docs/benchmarks.md``).

Messages, child to server, over one pipe and in order, as bytes read without pickle
(:mod:`service.fleet_wire`); the job comes first, server to child, the same way::

    ("meta", catalog, health, changes, leases)  stored, and handed to the server's runtime
    ("out", PipelineOutput)                     Runtime.write
    ("ready", incident root, seconds taken)     the live map is filled
    ("progress", simulated minutes done, total) of the history fill
    ("rollup", now)                             Runtime.rollup (the history, once filled)
    ("filled", seconds taken)                   the history is filled

Server to child: ``("stop",)``: write every open window (:meth:`Runtime.drain`) and exit. The end of
the pipe (the server gone) ends the child at its next message. Ctrl-C reaches the child too (one
process group): it ignores it, and the server stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from service import fleet_wire
from service.runtime import Runtime
from topology.pipeline import Pipeline, PipelineConfig, PipelineOutput
from topology.sim.faults import FaultKind

T = TypeVar("T")

__all__ = ["FleetJob", "feed", "inject_showcase", "main", "showcase_root", "write_truth"]

FLUSH_EVERY = 0.5  # seconds between the live pipeline's flushes (part of the freshness budget)
SHOWCASE_SECONDS = 6 * 3600.0  # how long the demo's incident lasts (README: "During an incident")
#: the history needs no freshness: coarse stage-1 windows and no provisional writes (bulk settings)
HISTORY = PipelineConfig(stage1_window=10, lateness=5.0, provisional=False)
HISTORY_STEP = 60.0  # seconds of traffic per step of the history fill
#: windows per message: the server writes each part in one stretch of its stores' thread, where a
#: query waits until the stretch ends
PART = 500
#: the fleet's process yields the CPU to the server's (queries first); on idle cores it runs as fast.
#: 10 starved it on a busy machine (the history filled in 290 s instead of 106 s at load ~20); 5 kept
#: the queries as fast (docs/benchmarks.md) and the fill at 123 s
NICE = 5


def feed(runtime: Runtime, emission: Any, now: float) -> None:
    """Hand one simulator step's payloads to the runtime, exactly as they would arrive over the wire."""
    runtime.add_leases(emission.leases)
    runtime.add_catalog(emission.catalog)
    runtime.add_health(emission.health)
    for data in emission.flow_batches:
        runtime.accept_flows(data)
    for data in emission.metrics:
        runtime.accept_metrics(data)
    for data in emission.spans:
        runtime.accept_spans(data, now=now)


def showcase_root(sim: Any) -> str | None:
    """The app the demo's incident starts at: the first (by name) that a bad deploy can hit with two to
    four direct callers and two to eight callers two hops above (a story that fits on a screen)."""
    callers = sim.faults.callers()
    for root in sim.faults.candidates(FaultKind.BAD_DEPLOY):
        one = callers.get(root, set()) - {root}
        two = {c for n in one for c in callers.get(n, ())} - one - {root}
        if 2 <= len(one) <= 4 and 2 <= len(two) <= 8:
            return str(root)
    return None


def inject_showcase(sim: Any, start: float) -> str | None:
    """A bad deploy at :func:`showcase_root` from ``start``: the demo's incident to investigate."""
    root = showcase_root(sim)
    if root is not None:
        sim.inject(root, FaultKind.BAD_DEPLOY, start, SHOWCASE_SECONDS)
    return root


def write_truth(path: str | None, sims: list[Any]) -> None:
    """The union of the simulators' ground truth (edges that carried traffic so far, and the incidents
    started so far), atomically."""
    if not path:
        return
    layers: dict[str, set[tuple[str, str]]] = {}
    incidents: list[dict[str, Any]] = []
    for sim in sims:
        truth = sim.truth()
        incidents += truth.get("incidents", [])
        for layer, pairs in truth["layers"].items():
            layers.setdefault(layer, set()).update((a, b) for a, b in pairs)
    unified = set().union(*layers.values()) if layers else set()
    doc = {
        "layers": {k: sorted(map(list, v)) for k, v in layers.items()},
        "unified": sorted(map(list, unified)),
        "incidents": sorted(incidents, key=lambda i: (i["start"], i["root"])),
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)



@dataclass(frozen=True, slots=True)
class FleetJob:
    """What the child simulates. ``services`` and ``seed`` make the fleet; the live simulator starts at
    ``live_start`` (minute-aligned, before ``now``), catches up to ``now`` and then follows the wall
    clock in ``step`` seconds, through a pipeline configured as ``config``; with ``history_start``, once
    the live map is ready, a second simulator fills ``[history_start, live_start)``. ``truth``: where
    to write the simulators' ground truth."""

    services: int
    seed: int
    step: float
    live_start: float
    now: float
    history_start: float | None
    truth: str | None
    config: PipelineConfig


class _Forwarding(Runtime):
    """A runtime whose flushes send their output to the server instead of writing it, in parts of at
    most :data:`PART` windows (:func:`parts`)."""

    def __init__(self, conn: Connection, pipeline: Pipeline) -> None:
        super().__init__(None, None, pipeline)  # type: ignore[arg-type]  # no stores here: write() sends
        self._conn = conn

    async def write(self, out: PipelineOutput) -> None:
        for part in parts(out, PART):
            fleet_wire.send(self._conn, ("out", part))


def parts(out: PipelineOutput, size: int) -> Iterator[PipelineOutput]:
    """``out`` in parts of at most ``size`` windows (or trace summaries); the peer leases go with the
    last. A part carries no nodes: the wire derives them from its windows where it is read
    (:mod:`service.fleet_wire`). Arrived and written one after the other, the parts store what ``out``
    would (windows are replaced by key, nodes merged by name)."""
    def chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
        return (items[i:i + size] for i in range(0, len(items), size))

    for late in (False, True):
        for layer, ws in (out.late if late else out.windows).items():
            for chunk in chunks(ws):
                by_layer = {layer: list(chunk)}
                yield PipelineOutput(windows={} if late else by_layer, late=by_layer if late else {},
                                     watermark=out.watermark)
    for traces in chunks(out.traces):
        yield PipelineOutput(traces=list(traces), watermark=out.watermark)
    if out.peer_leases:
        yield PipelineOutput(peer_leases=out.peer_leases, watermark=out.watermark)


def main(conn: Connection) -> None:
    """The child process: run the job the server sends first, until it says stop or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(NICE)
    gc.set_threshold(10_000, 20, 200)  # as the server's: the pipelines' state is long-lived
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, EOFError):  # the server is gone
        kind, job = fleet_wire.recv(conn)
        assert kind == "job", kind
        asyncio.run(_Fleet(conn, job).run())


class _Fleet:
    def __init__(self, conn: Connection, job: FleetJob) -> None:
        self.conn = conn
        self.job = job
        self.sims: list[Any] = []

    def _sim(self, start: float) -> Any:
        from topology.sim import Simulator, generate_fleet

        sim = Simulator(generate_fleet(services=self.job.services, seed=self.job.seed), seed=self.job.seed,
                        start=start)
        self.sims.append(sim)
        return sim

    def _meta(self, em: Any, leases: bool = True) -> None:
        """Send what the server stores at once (catalog, health, changes) and, from the live fleet, the
        address leases (the server's runtime keeps them for HTTP ingest, in its lease file)."""
        if em.catalog or em.health or em.change_events or (leases and em.leases):
            fleet_wire.send(self.conn, ("meta", list(em.catalog), list(em.health), list(em.change_events),
                            list(em.leases) if leases else []))

    def _stopped(self) -> bool:
        """The server said stop (or is gone)."""
        return self.conn.poll()

    async def _step(self, sim: Any, rt: Runtime, t: float, dt: float, leases: bool = True) -> None:
        """One simulator step through admission into ``rt``'s pipeline (in worker threads, so the live
        and the history simulators take turns)."""
        em = await asyncio.to_thread(sim.step, t, dt)
        await asyncio.to_thread(feed, rt, em, t)
        self._meta(em, leases)

    async def run(self) -> None:
        job = self.job
        began = time.monotonic()
        sim = self._sim(job.live_start)
        root = inject_showcase(sim, job.live_start)
        rt = _Forwarding(self.conn, Pipeline(job.config))
        initial = sim.initial_records()
        self._meta(initial)
        feed(rt, initial, job.live_start)
        t = job.live_start
        history: asyncio.Task[None] | None = None
        try:
            while t < job.now and not self._stopped():  # catch up, as fast as the CPU allows
                dt = min(job.step, job.now - t)
                await self._step(sim, rt, t, dt)
                t += dt
                await rt.flush(t)
            write_truth(job.truth, self.sims)
            fleet_wire.send(self.conn, ("ready", root, time.monotonic() - began))
            if job.history_start is not None:
                history = asyncio.create_task(self._history(job.history_start, job.live_start))
            while not self._stopped():  # then follow the wall clock
                target = time.time()
                while t + job.step <= target:
                    await self._step(sim, rt, t, job.step)
                    t += job.step
                await rt.flush(target)
                write_truth(job.truth, self.sims)
                await asyncio.sleep(FLUSH_EVERY)
        finally:
            if history is not None:
                history.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await history
        await rt.drain()  # every open window written, as the server does with its own at shutdown

    async def _history(self, start: float, end: float) -> None:
        began = time.monotonic()
        rt = _Forwarding(self.conn, Pipeline(HISTORY))
        sim = self._sim(start)
        feed(rt, sim.initial_records(), start)
        t = start
        while t < end:
            dt = min(HISTORY_STEP, end - t)
            await self._step(sim, rt, t, dt, leases=False)
            t += dt
            await rt.flush(t)
            fleet_wire.send(self.conn, ("progress", (t - start) / 60, (end - start) / 60))
        for extra in (60.0, 120.0, 180.0):  # close the last windows (they end before the live ones begin)
            await rt.flush(t + extra)
        fleet_wire.send(self.conn, ("rollup", end))
        fleet_wire.send(self.conn, ("filled", time.monotonic() - began))
