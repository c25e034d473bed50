"""The demo's simulated fleet, as the server sees it: :class:`SimulationDriver` runs the fleet in a
child process (:mod:`service.demo_fleet`: simulator, admission, pipeline, in wall-clock time) and
writes what it sends into the server's stores (``topology demo``; the server around it is
:mod:`service.server`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import threading
from collections.abc import Sequence
from typing import Any

from ingest.state import StateError
from service import fleet_wire
from service.demo_fleet import (
    FLUSH_EVERY,
    SHOWCASE_SECONDS,
    FleetJob,
    feed,
    inject_showcase,
    showcase_root,
    write_truth,
)
from service.demo_fleet import main as run_fleet
from service.progress import Progress
from service.runtime import Runtime
from topology.catalog import HealthEvent, ServiceInfo
from topology.change import ChangeEvent
from topology.pipeline import PipelineConfig
from topology.sim.faults import FaultKind
from topology.store.base import Stores
from topology.timewindow import MINUTE, align

__all__ = ["FLUSH_EVERY", "ROLLUP_EVERY", "SHOWCASE_SECONDS", "SimulationDriver", "feed", "inject_showcase",
           "persist_meta", "showcase_root", "store_meta", "write_truth"]

log = logging.getLogger("topology.demo")

ROLLUP_EVERY = 60.0
STOP_PATIENCE = 30.0  # seconds the fleet's process has to write its open windows at shutdown
INBOX = 8  # the fleet's messages read and not yet stored, at most


async def store_meta(stores: Stores, catalog: Sequence[ServiceInfo], health: Sequence[HealthEvent],
                     changes: Sequence[ChangeEvent]) -> None:
    """Store catalog entries, health and change events (what the ingest routes store when accepted)."""
    if catalog:
        await stores.catalog.upsert_services(list(catalog))
    if health:
        await stores.catalog.record_health(list(health))
    if changes:
        await stores.catalog.record_changes(list(changes))


async def persist_meta(stores: Stores, emission: Any) -> None:
    """:func:`store_meta` of one simulator step."""
    await store_meta(stores, emission.catalog, emission.health, emission.change_events)


class SimulationDriver:
    """Runs the demo's simulated fleet, with one incident: a bad deploy when the live traffic starts
    (:func:`inject_showcase`; README: "During an incident").

    The fleet runs in a child process (:mod:`service.demo_fleet`: simulator, admission, pipeline),
    so the server's interpreter is the queries' own; this side stores what it sends, through
    ``runtime`` (:meth:`Runtime.write`; catalog, health and changes as they come; the leases into the
    runtime's lease file).

    Start-up is split so the live map answers within seconds: a *live* simulator starts ``warmup``
    seconds in the past, catches up, then follows the wall clock; an independent *history*
    simulator (same fleet and seed, its own pipeline) fills ``[now - backfill, now - warmup)`` in the
    background with one-minute steps. Their windows never overlap in time, so their writes never
    collide. When the store already holds data (a restart), the history fill is skipped.
    """

    def __init__(
        self,
        services: int,
        seed: int,
        runtime: Runtime,
        step: float,
        backfill: float,
        truth: str | None,
        warmup: float = 120.0,
        config: PipelineConfig | None = None,
    ) -> None:
        self.services = services
        self.seed = seed
        self.runtime = runtime
        self.step = step
        self.backfill = backfill
        self.warmup = min(warmup, backfill)
        self.truth = truth
        self.config = config or PipelineConfig()  # the live pipeline's
        self.ready = asyncio.Event()  # the live map is filled
        self.history_filled = asyncio.Event()  # so is the history (or there was none to fill)
        self._bar: Progress | None = None

    async def run(self) -> None:
        rt = self.runtime
        counts = await asyncio.gather(*(s.window_count() for s in rt.stores.layers.values()))
        fresh_store = not any(sum(c.values()) for c in counts if c)  # a restart keeps its own history
        now = rt.clock()
        # Minute-aligned, so the history's last one-minute window ends where the live ones begin.
        live_start = float(align(now - self.warmup, MINUTE))
        history = None
        if self.backfill > self.warmup and fresh_store:
            history = float(align(now - self.backfill, MINUTE))
        if history is None:
            self.history_filled.set()
        job = FleetJob(self.services, self.seed, self.step, live_start, now, history, self.truth, self.config)
        context = multiprocessing.get_context("spawn")  # not fork: this process runs threads
        ours, theirs = context.Pipe()
        child = context.Process(target=run_fleet, args=(theirs,), name="topology-demo-fleet", daemon=True)
        child.start()
        theirs.close()
        fleet_wire.send(ours, ("job", job))
        # Bounded: when the stores fall behind, the reader stops reading, the pipe fills and the
        # fleet waits in its next send (back-pressure instead of a backlog in memory).
        inbox: asyncio.Queue[tuple[Any, ...] | None] = asyncio.Queue(INBOX)
        loop = asyncio.get_running_loop()

        def read() -> None:  # a thread of its own: a blocking read, decoding off the event loop
            while True:
                try:
                    message: tuple[Any, ...] | None = fleet_wire.recv(ours)
                except (EOFError, OSError):
                    message = None
                except StateError as e:  # not the fleet's own bytes: stop listening to it
                    log.error("unreadable message from the simulated fleet", extra={"error": str(e)[:300]})
                    message = None
                try:
                    asyncio.run_coroutine_threadsafe(inbox.put(message), loop).result()
                except (RuntimeError, concurrent.futures.CancelledError):
                    return  # the loop is gone (shutdown)
                if message is None:
                    return

        threading.Thread(target=read, name="topology-demo-fleet-reader", daemon=True).start()
        try:
            await self._take(inbox)
            log.error("the simulated fleet stopped", extra={"exitcode": child.exitcode})
        finally:
            with contextlib.suppress(OSError):
                fleet_wire.send(ours, ("stop",))  # it writes its open windows, then exits
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._take(inbox), STOP_PATIENCE)
            await asyncio.to_thread(_end, child)
            ours.close()

    async def _take(self, inbox: asyncio.Queue[tuple[Any, ...] | None]) -> None:
        """Handle the child's messages (:mod:`service.demo_fleet`) until it is gone."""
        rt = self.runtime
        while (message := await inbox.get()) is not None:
            kind, *args = message
            try:
                if kind == "out":
                    await rt.write(args[0])
                elif kind == "meta":
                    catalog, health, changes, leases = args
                    await store_meta(rt.stores, catalog, health, changes)
                    rt.add_leases(leases)
                    rt.add_catalog(catalog)
                    rt.add_health(health)
                elif kind == "ready":
                    log.info("incident injected", extra={"root": args[0], "kind": FaultKind.BAD_DEPLOY.value})
                    log.info("live map ready", extra={"warmup_s": self.warmup, "took_s": round(args[1], 1)})
                    self.ready.set()
                elif kind == "progress":
                    self._bar = self._bar or Progress("history", args[1], "min")
                    self._bar.update(args[0])
                elif kind == "rollup":
                    await rt.rollup(args[0])
                elif kind == "filled":
                    if self._bar is not None:
                        self._bar.close()
                    log.info("history filled", extra={"took_s": round(args[0], 1)})
                    self.history_filled.set()
            except Exception:  # a store hiccup loses that message's writes, not the fleet
                log.exception("could not store the simulated fleet's output", extra={"kind": kind})

    def detail(self) -> dict[str, str]:
        """What ``/readyz`` adds: ``history`` is ``filling`` until the past answers are complete."""
        return {"history": "filled" if self.history_filled.is_set() else "filling"}


def _end(child: Any) -> None:
    """Wait for the child to exit; stop it if it does not."""
    child.join(5)  # it closed its end of the pipe, or was given STOP_PATIENCE seconds already
    if child.is_alive():
        child.terminate()
        child.join(5)
    if child.is_alive():
        child.kill()
        child.join()
