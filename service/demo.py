"""The demo's simulated fleet: :class:`SimulationDriver` feeds the fleet simulator's traffic into an
ingest runtime in wall-clock time (``topology demo``; the server around it is :mod:`service.server`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from service.app import freeze_heap
from service.progress import Progress
from service.runtime import Runtime
from topology.admit import admit_flows, admit_metrics, admit_spans
from topology.pipeline import Pipeline, PipelineConfig
from topology.sim.faults import FaultKind
from topology.store.base import Stores
from topology.timewindow import MINUTE, align

log = logging.getLogger("topology.demo")

PROTOBUF = "application/x-protobuf"
FLUSH_EVERY = 0.5  # seconds between pipeline flushes (part of the freshness budget)
SHOWCASE_SECONDS = 6 * 3600.0  # how long the demo's incident lasts (README: "During an incident")
ROLLUP_EVERY = 60.0


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


async def persist_meta(stores: Stores, emission: Any) -> None:
    if emission.catalog:
        await stores.catalog.upsert_services(list(emission.catalog))
    if emission.health:
        await stores.catalog.record_health(list(emission.health))
    if emission.change_events:
        await stores.catalog.record_changes(list(emission.change_events))


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


async def feed_live(runtime: Runtime, emission: Any, now: float) -> None:
    """:func:`feed` for a runtime that HTTP ingest shares: the payloads are decoded and admitted in a
    worker thread (pure), then applied on the event loop."""
    runtime.add_leases(emission.leases)
    runtime.add_catalog(emission.catalog)
    runtime.add_health(emission.health)
    arrival = runtime.clock()

    def admitted() -> list[tuple[str, Any, float]]:
        return [*(("flows", admit_flows(d, arrival), arrival) for d in emission.flow_batches),
                *(("metrics", admit_metrics(d, PROTOBUF, arrival), arrival) for d in emission.metrics),
                *(("spans", admit_spans(d, PROTOBUF, now), now) for d in emission.spans)]

    for kind, adm, at in await asyncio.to_thread(admitted):
        runtime.apply(kind, adm, at)


async def simulate_span(sim: Any, rt: Runtime, start: float, end: float, step: float,
                        progress: Callable[[float], None] | None = None, *, private: bool = False) -> float:
    """Feed [start, end) of simulated traffic as fast as possible, yielding between steps
    (``progress`` is told the simulated seconds done after each). The simulator steps in a worker
    thread, so the event loop (queries, ``/healthz``) answers meanwhile; with ``private`` (a runtime
    nothing else uses, the history's) feeding runs there too (the
    pipeline always does)."""
    t = start
    while t < end:
        dt = min(step, end - t)
        em = await asyncio.to_thread(sim.step, t, dt)
        if private:
            await asyncio.to_thread(feed, rt, em, t)
        else:
            await feed_live(rt, em, t)
        await persist_meta(rt.stores, em)
        t += dt
        await rt.flush(t)
        if progress is not None:
            progress(t - start)
        await asyncio.sleep(0)
    return t


class SimulationDriver:
    """Runs the demo's simulated fleet, with one incident: a bad deploy when the live traffic starts
    (:func:`inject_showcase`; README: "During an incident").

    Start-up is split so the live map answers within seconds: a *live* simulator starts ``warmup``
    seconds in the past, catches up, then follows the wall clock; an independent *history*
    simulator (same fleet and seed, its own pipeline) fills ``[now - backfill, now - warmup)`` in the
    background with one-minute steps. Their windows never overlap in time, so their writes never
    collide. When the store already holds data (a restart), the history fill is skipped.
    """

    def __init__(
        self,
        make_sim: Any,
        runtime: Runtime,
        step: float,
        backfill: float,
        truth: str | None,
        warmup: float = 120.0,
    ) -> None:
        self.make_sim = make_sim
        self.runtime = runtime
        self.step = step
        self.backfill = backfill
        self.warmup = min(warmup, backfill)
        self.truth = truth
        self.ready = asyncio.Event()  # the live map is filled
        self.history_filled = asyncio.Event()  # so is the history (or there was none to fill)
        self.sims: list[Any] = []

    async def run(self) -> None:
        rt = self.runtime
        counts = await asyncio.gather(*(s.window_count() for s in rt.stores.layers.values()))
        fresh_store = not any(sum(c.values()) for c in counts if c)  # a restart keeps its own history
        now = rt.clock()
        # Minute-aligned, so the history's last one-minute window ends where the live ones begin.
        live_start = float(align(now - self.warmup, MINUTE))
        sim = self.make_sim(live_start)
        self.sims.append(sim)
        root = inject_showcase(sim, live_start)
        log.info("incident injected", extra={"root": root, "kind": FaultKind.BAD_DEPLOY.value})
        initial = sim.initial_records()
        await persist_meta(rt.stores, initial)
        feed(rt, initial, live_start)
        started = time.monotonic()
        t = await simulate_span(sim, rt, live_start, now, self.step)
        write_truth(self.truth, self.sims)
        log.info(
            "live map ready", extra={"warmup_s": self.warmup, "took_s": round(time.monotonic() - started, 1)}
        )
        self.ready.set()
        history: asyncio.Task[None] | None = None
        if self.backfill > self.warmup and fresh_store:
            history = asyncio.create_task(
                self._history(float(align(now - self.backfill, MINUTE)), live_start)
            )
        else:
            self.history_filled.set()
        last_rollup = time.monotonic()
        try:
            while True:
                target = rt.clock()
                while t + self.step <= target:
                    em = await asyncio.to_thread(sim.step, t, self.step)
                    await feed_live(rt, em, t)
                    await persist_meta(rt.stores, em)
                    t += self.step
                await rt.flush(target)
                write_truth(self.truth, self.sims)
                if time.monotonic() - last_rollup > ROLLUP_EVERY:
                    await rt.rollup(target)
                    last_rollup = time.monotonic()
                await asyncio.sleep(FLUSH_EVERY)
        finally:
            if history is not None:
                history.cancel()

    async def _history(self, start: float, end: float) -> None:
        # History needs no freshness: coarse stage-1 windows and no provisional writes (bulk settings).
        bulk = PipelineConfig(stage1_window=10, lateness=5.0, provisional=False)
        rt = Runtime(self.runtime.stores, None, Pipeline(bulk), clock=self.runtime.clock)
        sim = self.make_sim(start)
        self.sims.append(sim)
        initial = sim.initial_records()
        feed(rt, initial, start)
        began = time.monotonic()
        bar = Progress("history", (end - start) / 60, "min")
        t = await simulate_span(sim, rt, start, end, 60.0, lambda done: bar.update(done / 60), private=True)
        bar.close()
        for extra in (60.0, 120.0, 180.0):  # close the last windows (they end before the live ones begin)
            await rt.flush(t + extra)
        await rt.rollup(end)
        log.info(
            "history filled", extra={"from": start, "to": end, "took_s": round(time.monotonic() - began, 1)}
        )
        # What the fill stored is long-lived: out of the collector's sight, as the server does with
        # what it opened (otherwise each full collection walks it again: pauses of 0.3-1.9 s measured
        # at 1,000 services, every thread stopped, /healthz included).
        freeze_heap()
        self.history_filled.set()

    def detail(self) -> dict[str, str]:
        """What ``/readyz`` adds: ``history`` is ``filling`` until the past answers are complete."""
        return {"history": "filled" if self.history_filled.is_set() else "filling"}
